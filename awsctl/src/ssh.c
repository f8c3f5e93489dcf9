/* SSH with libssh2 (blocking sessions, one per thread): host keys pinned on
 * first contact, public-key login, SFTP uploads, remote commands. */
#define _GNU_SOURCE
#include "awsctl.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libssh2.h>
#include <libssh2_sftp.h>
#include <openssl/evp.h>

#define CONNECT_MS 10000
#define SESSION_MS 60000
#define EXEC_MS    900000 /* a bootstrap may install packages */
#define HOSTKEY_PREFS                                                                              \
    "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,ssh-rsa"

struct ssh {
    int sock;
    LIBSSH2_SESSION *s;
    LIBSSH2_SFTP *sftp;
    char host[64];
};

/* A TCP connection to host:port within timeout_ms, or -1 with err. */
static int tcp_connect(const char *host, int port, long timeout_ms, char *err, size_t errlen) {
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc) {
        snprintf(err, errlen, "%s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int e = fd < 0 ? errno : 0;
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        e = errno;
        struct pollfd p = {fd, POLLOUT, 0};
        socklen_t el = sizeof(e);
        if (e == EINPROGRESS) {
            e = ETIMEDOUT;
            if (poll(&p, 1, (int)timeout_ms) == 1) getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
        }
    }
    freeaddrinfo(ai);
    if (e) {
        snprintf(err, errlen, "cannot connect to %s port %d: %s", host, port, strerror(e));
        if (fd >= 0) close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

bool ssh_banner(const char *host, int port, long timeout_ms) {
    char err[256], buf[256];
    int fd = tcp_connect(host, port, timeout_ms, err, sizeof(err));
    if (fd < 0) return false;
    struct pollfd p = {fd, POLLIN, 0};
    ssize_t n = poll(&p, 1, (int)timeout_ms) == 1 ? recv(fd, buf, sizeof(buf) - 1, 0) : -1;
    close(fd);
    return n >= 4 && !memcmp(buf, "SSH-", 4);
}

static void session_error(struct ssh *s, const char *what, char *err, size_t errlen) {
    char *msg = NULL;
    libssh2_session_last_error(s->s, &msg, NULL, 0);
    snprintf(err, errlen, "%s: %s: %s", s->host, what, msg && *msg ? msg : "failed");
}

static const char *key_type_name(int type) {
    switch (type) {
    case LIBSSH2_HOSTKEY_TYPE_RSA: return "ssh-rsa";
    case LIBSSH2_HOSTKEY_TYPE_DSS: return "ssh-dss";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return "ecdsa-sha2-nistp256";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return "ecdsa-sha2-nistp384";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return "ecdsa-sha2-nistp521";
    case LIBSSH2_HOSTKEY_TYPE_ED25519: return "ssh-ed25519";
    default: return "unknown";
    }
}

/* "SHA256:…" of a "type base64" key line, as ssh-keygen -l shows it. */
static void fingerprint(const char *line, char *out, size_t len) {
    const char *sp = strchr(line, ' ');
    unsigned char *blob = NULL, h[32];
    unsigned int hl = 0;
    char enc[64];
    long n = sp ? b64_decode(sp + 1, strcspn(sp + 1, " \n"), &blob) : -1;
    bool ok = n > 0 && EVP_Digest(blob, (size_t)n, h, &hl, EVP_sha256(), NULL) &&
              b64_encode(h, hl, enc, sizeof(enc));
    free(blob);
    enc[ok ? strcspn(enc, "=") : 0] = '\0';
    snprintf(out, len, ok ? "SHA256:%s" : "(unreadable key)%s", enc);
}

/* The server's key against the recorded one (pinned on first contact). */
static bool check_host_key(struct ssh *s, char *recorded, size_t reclen, char *err, size_t errlen) {
    size_t len = 0;
    int type = 0;
    const char *key = libssh2_session_hostkey(s->s, &len, &type);
    char line[4096];
    int w = snprintf(line, sizeof(line), "%s ", key_type_name(type));
    if (!key || !b64_encode((const unsigned char *)key, len, line + w, sizeof(line) - (size_t)w)) {
        snprintf(err, errlen, "%s: no usable host key", s->host);
        return false;
    }
    if (!*recorded) return copy_str(recorded, reclen, line);
    if (!strcmp(recorded, line)) return true;
    char was[80], now[80];
    fingerprint(recorded, was, sizeof(was));
    fingerprint(line, now, sizeof(now));
    snprintf(err, errlen,
             "%s: HOST KEY CHANGED: recorded %.*s %s, offered %s %s; refusing to connect (if the "
             "instance was really replaced, delete its host_key from the state file)",
             s->host, (int)strcspn(recorded, " "), recorded, was, key_type_name(type), now);
    return false;
}

/* The recorded key's type first, so that the server shows the same key. */
static void prefer_host_key(struct ssh *s, const char *recorded) {
    char prefs[256];
    snprintf(prefs, sizeof(prefs), "%.*s%s" HOSTKEY_PREFS, (int)strcspn(recorded, " "), recorded,
             *recorded ? "," : "");
    libssh2_session_method_pref(s->s, LIBSSH2_METHOD_HOSTKEY, prefs);
}

static bool login(struct ssh *s, const char *user, const char *key_path, char *err, size_t errlen) {
    if (!libssh2_userauth_publickey_fromfile_ex(s->s, user, (unsigned)strlen(user), NULL, key_path,
                                                NULL))
        return true;
    char what[PATH_MAX + 128];
    snprintf(what, sizeof(what), "public-key login as %s with %s failed", user, key_path);
    session_error(s, what, err, errlen);
    return false;
}

struct ssh *ssh_open(const char *host, int port, const char *user, const char *key_path,
                     char *host_key, size_t host_key_len, char *err, size_t errlen) {
    struct ssh *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "%s: out of memory", host);
        return NULL;
    }
    snprintf(s->host, sizeof(s->host), "%s", host);
    s->sock = tcp_connect(host, port, CONNECT_MS, err, errlen);
    s->s = s->sock >= 0 ? libssh2_session_init() : NULL;
    if (!s->s) {
        if (s->sock >= 0) snprintf(err, errlen, "%s: cannot start an SSH session", host);
        ssh_close(s);
        return NULL;
    }
    libssh2_session_set_blocking(s->s, 1);
    libssh2_session_set_timeout(s->s, SESSION_MS);
    prefer_host_key(s, host_key);
    bool ok = false;
    if (libssh2_session_handshake(s->s, s->sock))
        session_error(s, "SSH handshake failed", err, errlen);
    else if (check_host_key(s, host_key, host_key_len, err, errlen))
        ok = login(s, user, key_path, err, errlen);
    if (!ok) {
        ssh_close(s);
        return NULL;
    }
    return s;
}

void ssh_close(struct ssh *s) {
    if (!s) return;
    if (s->sftp) libssh2_sftp_shutdown(s->sftp);
    if (s->s) {
        libssh2_session_disconnect(s->s, "done");
        libssh2_session_free(s->s);
    }
    if (s->sock >= 0) close(s->sock);
    free(s);
}

static void sftp_error(struct ssh *s, const char *what, const char *path, char *err,
                       size_t errlen) {
    static const char *const status[] = {
        "ok",          "end of file",   "no such file",    "permission denied",    "failure",
        "bad message", "no connection", "connection lost", "unsupported operation"};
    unsigned long code = s->sftp ? libssh2_sftp_last_error(s->sftp) : 0;
    if (code > 0 && code < sizeof(status) / sizeof(status[0]))
        snprintf(err, errlen, "%s: %s %s: %s", s->host, what, path, status[code]);
    else
        session_error(s, what, err, errlen);
}

bool ssh_upload_mem(struct ssh *s, const char *data, size_t len, const char *remote, int mode,
                    char *err, size_t errlen) {
    if (!s->sftp && !(s->sftp = libssh2_sftp_init(s->s))) {
        session_error(s, "cannot start SFTP", err, errlen);
        return false;
    }
    LIBSSH2_SFTP_HANDLE *h = libssh2_sftp_open_ex(
        s->sftp, remote, (unsigned)strlen(remote),
        LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_TRUNC, mode, LIBSSH2_SFTP_OPENFILE);
    if (!h) {
        sftp_error(s, "cannot create", remote, err, errlen);
        return false;
    }
    bool ok = true;
    for (size_t off = 0; ok && off < len;) {
        ssize_t w = libssh2_sftp_write(h, data + off, len - off);
        ok = w > 0;
        if (ok) off += (size_t)w;
    }
    /* The server applies its umask when creating the file: set the mode. */
    LIBSSH2_SFTP_ATTRIBUTES attrs = {.flags = LIBSSH2_SFTP_ATTR_PERMISSIONS,
                                     .permissions = (unsigned long)mode};
    ok = ok && libssh2_sftp_fsetstat(h, &attrs) == 0;
    if (!ok) sftp_error(s, "cannot write", remote, err, errlen);
    bool closed = libssh2_sftp_close(h) == 0;
    if (ok && !closed) sftp_error(s, "cannot close", remote, err, errlen);
    return ok && closed;
}

bool ssh_upload(struct ssh *s, const char *local, const char *remote, int mode, char *err,
                size_t errlen) {
    size_t len;
    char *data = read_file(local, &len, err, errlen);
    if (!data) return false;
    bool ok = ssh_upload_mem(s, data, len, remote, mode, err, errlen);
    free(data);
    return ok;
}

/* Appends n bytes to the tail buffer out (size len), dropping the oldest. */
static void keep_tail(char *out, size_t len, size_t *used, const char *buf, size_t n) {
    if (n >= len - 1) {
        buf += n - (len - 1);
        n = len - 1;
        *used = 0;
    } else if (*used + n > len - 1) {
        size_t drop = *used + n - (len - 1);
        memmove(out, out + drop, *used - drop);
        *used -= drop;
    }
    memcpy(out + *used, buf, n);
    *used += n;
    out[*used] = '\0';
}

bool ssh_exec(struct ssh *s, const char *cmd, int *status, char *out, size_t outlen, char *err,
              size_t errlen) {
    LIBSSH2_CHANNEL *ch = libssh2_channel_open_session(s->s);
    size_t used = 0;
    out[0] = '\0';
    if (!ch || libssh2_channel_exec(ch, cmd)) {
        session_error(s, "cannot run a remote command", err, errlen);
        if (ch) libssh2_channel_free(ch);
        return false;
    }
    libssh2_session_set_timeout(s->s, EXEC_MS);
    char buf[8192];
    ssize_t n;
    while ((n = libssh2_channel_read(ch, buf, sizeof(buf))) > 0)
        keep_tail(out, outlen, &used, buf, (size_t)n);
    while (n == 0 && (n = libssh2_channel_read_stderr(ch, buf, sizeof(buf))) > 0)
        keep_tail(out, outlen, &used, buf, (size_t)n);
    libssh2_session_set_timeout(s->s, SESSION_MS);
    const char *step = "reading its output";
    int rc = (int)n;
    if (!rc && (rc = libssh2_channel_close(ch))) step = "closing its channel";
    if (!rc && (rc = libssh2_channel_wait_closed(ch))) step = "waiting for its channel to close";
    bool ok = rc == 0;
    if (ok) {
        *status = libssh2_channel_get_exit_status(ch);
    } else {
        char what[96];
        snprintf(what, sizeof(what), "remote command: %s (libssh2 error %d)", step, rc);
        session_error(s, what, err, errlen);
    }
    libssh2_channel_free(ch);
    return ok;
}
