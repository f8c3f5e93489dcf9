/* Command-line flags for the small tools (backend, loadgen): "--name",
 * "--name=value" or "--name value", checked against the tool's lists. Every
 * mistake ends the program with one line naming the flag, exit status 2. */
#ifndef LB_FLAGS_H
#define LB_FLAGS_H

/* The program name the messages start with. */
void flags_init(const char *program);
/* "PROGRAM: <message> (see --help)" on stderr, exit 2. */
void flags_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* An unsigned decimal integer within [min, max], or flags_die naming flag. */
unsigned long long flags_uint(const char *flag, const char *v, unsigned long long min,
                              unsigned long long max);
/* The flag at argv[*i] (its name, without "=value"), or NULL when argv[*i]
 * does not start with "--". *val is its value (taken from the next argument
 * when not given with '=', *i then advancing) for a flag in with_value, NULL
 * for one in no_value. A flag in neither list, a missing value or a value
 * given to a flag without one: flags_die. The name lives until the next call. */
const char *flags_next(int argc, char **argv, int *i, const char *const *with_value,
                       const char *const *no_value, const char **val);

#endif
