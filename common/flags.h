/* Command-line flags: "--name", "--name=value" or "--name value", checked
 * against the program's lists. flags_scan and flags_int report a mistake to
 * their caller (the proxy, whose configuration is read again on SIGHUP);
 * flags_next and flags_uint, for the small tools (backend, loadgen, awsctl),
 * end the program with one line naming the flag, exit status 2. */
#ifndef LB_FLAGS_H
#define LB_FLAGS_H

#include <stddef.h>

/* The program name the messages start with. */
void flags_init(const char *program);
/* "PROGRAM: <message> (see --help)" on stderr, exit 2. */
void flags_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* The one integer parser: v is a decimal integer within [min, max] (no sign,
 * blank or "+"; a "-" only when min < 0). 0 with *out set, or -1. */
int flags_int(const char *v, long long min, long long max, long long *out);
/* flags_int, or flags_die naming flag. */
unsigned long long flags_uint(const char *flag, const char *v, unsigned long long min,
                              unsigned long long max);

/* The flag at argv[*i]: 1 with *name (without "=value"; it lives until the
 * next call) and *val, its value for a flag in with_value (taken from the next
 * argument when not given with '=', *i then advancing; a next argument that
 * starts with "--" is the next flag, not a value), NULL for one in no_value.
 * 0 when argv[*i] is not a flag (it does not start with "--", or is "--").
 * -1 with err naming the flag: unknown, missing value, value not taken. */
int flags_scan(int argc, char **argv, int *i, const char *const *with_value,
               const char *const *no_value, const char **name, const char **val, char *err,
               size_t errlen);
/* flags_scan, NULL when argv[*i] is not a flag; a mistake: flags_die. */
const char *flags_next(int argc, char **argv, int *i, const char *const *with_value,
                       const char *const *no_value, const char **val);

#endif
