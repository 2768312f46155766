/* common/curve.c - CURVE security for mapper's ZeroMQ sockets: key files,
 * the allow-list of worker keys and socket setup (curve.h). The ZAP
 * handler is in curve_zap.c. */
#include "curve.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define S_SECRET_MODE 0600 /* NAME.key */
#define S_PUBLIC_MODE 0644 /* NAME.pub */
#define S_GROUP_OTHER 0077 /* bits that make a secret key file too open */
#define S_ALLOW_FIRST 8    /* keys allocated at the first add */

struct curve_allow {
    uint8_t (*keys)[CURVE_KEY_BYTES]; /* the allowed public keys, binary */
    size_t count;                     /* keys in use */
    size_t cap;                       /* keys allocated */
};

/* Decode a Z85 key of exactly CURVE_KEY_LEN characters into out. The length
 * is checked first: zmq_z85_decode writes 4/5 of strlen bytes. */
static bool s_decode(const char *z85, uint8_t out[CURVE_KEY_BYTES])
{
    if (!z85 || strnlen(z85, CURVE_KEY_LEN + 1) != CURVE_KEY_LEN) return false;
    return zmq_z85_decode(out, z85) != NULL;
}

/* True when z85 is a usable key; the decoded bytes are wiped. */
static bool s_key_ok(const char *z85)
{
    uint8_t bin[CURVE_KEY_BYTES];
    bool ok = s_decode(z85, bin);
    explicit_bzero(bin, sizeof bin);
    return ok;
}

bool curve_available(void)
{
    return zmq_has("curve") != 0;
}

/* ---- key files ---- */

/* Write key + "\n" to the new file fd, set its mode exactly (the umask
 * does not apply) and close it. On failure err names path. */
static bool s_write_key(int fd, const char *key, mode_t mode, const char *path,
                        char *err, size_t errlen)
{
    char line[CURVE_KEY_LEN + 1];
    memcpy(line, key, CURVE_KEY_LEN);
    line[CURVE_KEY_LEN] = '\n';
    bool ok = fchmod(fd, mode) == 0;
    size_t done = 0;
    while (ok && done < sizeof line) {
        ssize_t n = write(fd, line + done, sizeof line - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            ok = false;
        else
            done += (size_t)n;
    }
    ok = ok && fsync(fd) == 0;
    int saved = errno;
    if (close(fd) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    explicit_bzero(line, sizeof line);
    if (!ok)
        log_reason(err, errlen, "cannot write %s: %s", path, strerror(saved));
    return ok;
}

/* Create path exclusively (never following a symlink) and write key. */
static bool s_create_key(const char *path, const char *key, mode_t mode,
                         char *err, size_t errlen)
{
    int fd =
        open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        if (errno == EEXIST)
            log_reason(err, errlen, "%s already exists; not overwriting it",
                       path);
        else
            log_reason(err, errlen, "cannot create %s: %s", path,
                       strerror(errno));
        return false;
    }
    if (s_write_key(fd, key, mode, path, err, errlen)) return true;
    unlink(path);
    return false;
}

bool curve_keygen(const char *name, char *err, size_t errlen)
{
    log_reason(err, errlen, "%s", "");
    if (!name || !*name) {
        log_reason(err, errlen, "key name is empty");
        return false;
    }
    if (!curve_available()) {
        log_reason(err, errlen, "this libzmq was built without CURVE support");
        return false;
    }
    char key_path[PATH_MAX], pub_path[PATH_MAX];
    int kn = snprintf(key_path, sizeof key_path, "%s.key", name);
    int pn = snprintf(pub_path, sizeof pub_path, "%s.pub", name);
    if (kn < 0 || pn < 0 || (size_t)kn >= sizeof key_path ||
        (size_t)pn >= sizeof pub_path) {
        log_reason(err, errlen, "key name is too long");
        return false;
    }
    struct stat st;
    if (lstat(pub_path, &st) == 0) {
        log_reason(err, errlen, "%s already exists; not overwriting it",
                   pub_path);
        return false;
    }
    if (errno != ENOENT) {
        log_reason(err, errlen, "cannot check %s: %s", pub_path,
                   strerror(errno));
        return false;
    }
    char public_z85[CURVE_KEY_LEN + 1], secret_z85[CURVE_KEY_LEN + 1];
    if (zmq_curve_keypair(public_z85, secret_z85) != 0) {
        log_reason(err, errlen, "cannot generate a key pair: %s",
                   zmq_strerror(errno));
        return false;
    }
    bool ok = s_create_key(key_path, secret_z85, S_SECRET_MODE, err, errlen);
    explicit_bzero(secret_z85, sizeof secret_z85);
    if (!ok) return false;
    if (!s_create_key(pub_path, public_z85, S_PUBLIC_MODE, err, errlen)) {
        unlink(key_path); /* ours: created exclusively above */
        return false;
    }
    return true;
}

/* Read all of fd (at most cap bytes) into buf; false on a read error or
 * when the file holds more than cap bytes. */
static bool s_read_all(int fd, char *buf, size_t cap, size_t *len_out,
                       bool *too_long_out)
{
    size_t len = 0;
    *too_long_out = false;
    for (;;) {
        char *dst = buf + len;
        size_t room = cap - len;
        char extra;
        if (room == 0) { /* full: one more byte means too long */
            dst = &extra;
            room = 1;
        }
        ssize_t n = read(fd, dst, room);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return false;
        if (n == 0) break;
        if (dst == &extra) {
            *too_long_out = true;
            return false;
        }
        len += (size_t)n;
    }
    *len_out = len;
    return true;
}

/* Check buf (len bytes) is a key file's text: CURVE_KEY_LEN visible ASCII
 * characters, then only whitespace. Copies the key into out. */
static bool s_parse_key_text(const char *buf, size_t len, const char *path,
                             char out[CURVE_KEY_LEN + 1], char *err,
                             size_t errlen)
{
    size_t n = 0;
    while (n < len && buf[n] > ' ' && buf[n] < 0x7f)
        n++;
    if (n != CURVE_KEY_LEN) {
        log_reason(err, errlen,
                   "%s: not a key file (expected %d Z85 characters, found %zu)",
                   path, CURVE_KEY_LEN, n);
        return false;
    }
    for (size_t i = n; i < len; i++) {
        if (!strchr(" \t\r\n", buf[i]) || buf[i] == '\0') {
            log_reason(err, errlen, "%s: unexpected text after the key", path);
            return false;
        }
    }
    memcpy(out, buf, CURVE_KEY_LEN);
    out[CURVE_KEY_LEN] = '\0';
    if (!s_key_ok(out)) {
        explicit_bzero(out, CURVE_KEY_LEN + 1);
        log_reason(err, errlen, "%s: not a valid Z85 key", path);
        return false;
    }
    return true;
}

bool curve_read_key(const char *path, bool secret, char out[CURVE_KEY_LEN + 1],
                    char *err, size_t errlen)
{
    out[0] = '\0';
    log_reason(err, errlen, "%s", "");
    /* O_NONBLOCK: a FIFO planted at path must not hang us. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        log_reason(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return false;
    }
    struct stat st;
    char buf[CURVE_KEY_FILE_MAX];
    size_t len = 0;
    bool too_long = false;
    bool ok = false;
    if (fstat(fd, &st) != 0)
        log_reason(err, errlen, "cannot stat %s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        log_reason(err, errlen, "%s is not a regular file", path);
    else if (secret && (st.st_mode & S_GROUP_OTHER))
        log_reason(err, errlen,
                   "%s: permissions %04o are too open for a secret key "
                   "(group/others may access it); chmod 600 it",
                   path, (unsigned)(st.st_mode & 07777));
    else if (!s_read_all(fd, buf, sizeof buf, &len, &too_long))
        log_reason(err, errlen, "%s: %s", path,
                   too_long ? "too long for a key file" : strerror(errno));
    else
        ok = s_parse_key_text(buf, len, path, out, err, errlen);
    close(fd);
    explicit_bzero(buf, sizeof buf);
    return ok;
}

bool curve_public_from_secret(const char *secret_z85,
                              char public_out[CURVE_KEY_LEN + 1])
{
    public_out[0] = '\0';
    if (!s_key_ok(secret_z85)) {
        log_error("CURVE: the secret key is not a %d-character Z85 key",
                  CURVE_KEY_LEN);
        return false;
    }
    if (zmq_curve_public(public_out, secret_z85) != 0) {
        log_error("CURVE: cannot derive the public key: %s",
                  zmq_strerror(errno));
        public_out[0] = '\0';
        return false;
    }
    return true;
}

/* ---- the allow-list ---- */

curve_allow_t *curve_allow_new(void)
{
    curve_allow_t *self = calloc(1, sizeof *self);
    if (!self) log_error("CURVE: out of memory for the allow-list");
    return self;
}

/* Add a binary key unless present; false only when out of memory. */
static bool s_allow_add_bin(curve_allow_t *self,
                            const uint8_t key[CURVE_KEY_BYTES])
{
    if (curve_allow_has(self, key)) return true;
    if (self->count == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : S_ALLOW_FIRST;
        void *keys = reallocarray(self->keys, cap, sizeof *self->keys);
        if (!keys) return false;
        self->keys = keys;
        self->cap = cap;
    }
    memcpy(self->keys[self->count++], key, CURVE_KEY_BYTES);
    return true;
}

bool curve_allow_add(curve_allow_t *allow, const char *public_z85)
{
    uint8_t key[CURVE_KEY_BYTES];
    if (!allow || !s_decode(public_z85, key)) {
        log_error("CURVE: not a %d-character Z85 public key", CURVE_KEY_LEN);
        return false;
    }
    if (!s_allow_add_bin(allow, key)) {
        log_error("CURVE: out of memory for the allow-list");
        return false;
    }
    return true;
}

bool curve_allow_has(const curve_allow_t *allow,
                     const uint8_t key[CURVE_KEY_BYTES])
{
    if (!allow || !key) return false;
    for (size_t i = 0; i < allow->count; i++)
        if (memcmp(allow->keys[i], key, CURVE_KEY_BYTES) == 0) return true;
    return false;
}

size_t curve_allow_count(const curve_allow_t *allow)
{
    return allow ? allow->count : 0;
}

void curve_allow_destroy(curve_allow_t **self_p)
{
    if (!self_p || !*self_p) return;
    free((*self_p)->keys);
    free(*self_p);
    *self_p = NULL;
}

/* One allow-list line (len bytes): blank, a '#' comment, or a key
 * optionally followed by whitespace and a '#' comment. A Z85 key never
 * starts with '#': that is digit 84, and a key's first digit is at most 82
 * (83 * 85^4 > 2^32), so a comment is never a key. */
static bool s_allow_line(curve_allow_t *self, char *line, size_t len,
                         const char *path, size_t lineno, char *err,
                         size_t errlen)
{
    if (strlen(line) != len) {
        log_reason(err, errlen, "%s:%zu: NUL byte in the line", path, lineno);
        return false;
    }
    char *p = line + strspn(line, " \t\r\n");
    if (*p == '\0' || *p == '#') return true;
    size_t n = strcspn(p, " \t\r\n");
    char *rest = p + n + strspn(p + n, " \t\r\n");
    uint8_t key[CURVE_KEY_BYTES];
    bool is_key = n == CURVE_KEY_LEN && (*rest == '\0' || *rest == '#');
    if (is_key) {
        p[n] = '\0';
        is_key = s_decode(p, key);
    }
    if (!is_key) {
        log_reason(err, errlen, "%s:%zu: not a Z85 public key", path, lineno);
        return false;
    }
    if (!s_allow_add_bin(self, key)) {
        log_reason(err, errlen, "%s:%zu: out of memory", path, lineno);
        return false;
    }
    return true;
}

static bool s_allow_file(curve_allow_t *self, const char *path, char *err,
                         size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        log_reason(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return false;
    }
    char *line = NULL;
    size_t cap = 0;
    size_t lineno = 0;
    bool ok = true;
    ssize_t len;
    while (ok && (len = getline(&line, &cap, f)) >= 0)
        ok = s_allow_line(self, line, (size_t)len, path, ++lineno, err, errlen);
    if (ok && ferror(f)) {
        log_reason(err, errlen, "cannot read %s: %s", path, strerror(errno));
        ok = false;
    }
    free(line);
    fclose(f);
    return ok;
}

/* True when name ends in ".pub" and has a stem. */
static bool s_is_pub_name(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && strcmp(name + n - 4, ".pub") == 0;
}

static bool s_allow_dir(curve_allow_t *self, const char *path, char *err,
                        size_t errlen)
{
    DIR *dir = opendir(path);
    if (!dir) {
        log_reason(err, errlen, "cannot open directory %s: %s", path,
                   strerror(errno));
        return false;
    }
    bool ok = true;
    struct dirent *de;
    while (ok && (de = readdir(dir)) != NULL) {
        if (!s_is_pub_name(de->d_name)) continue;
        char file[PATH_MAX];
        int n = snprintf(file, sizeof file, "%s/%s", path, de->d_name);
        char z85[CURVE_KEY_LEN + 1];
        uint8_t key[CURVE_KEY_BYTES];
        struct stat st;
        if (n < 0 || (size_t)n >= sizeof file) {
            log_reason(err, errlen, "%s/%s: path too long", path, de->d_name);
            ok = false;
        } else if (stat(file, &st) == 0 && (st.st_mode & S_IWOTH)) {
            log_reason(err, errlen, "%s is writable by others; refusing it",
                       file);
            ok = false;
        } else if (!curve_read_key(file, false, z85, err, errlen)) {
            ok = false;
        } else if (!s_decode(z85, key) || !s_allow_add_bin(self, key)) {
            log_reason(err, errlen, "%s: out of memory", file);
            ok = false;
        }
    }
    closedir(dir);
    return ok;
}

curve_allow_t *curve_allow_load(const char *file_or_dir, char *err,
                                size_t errlen)
{
    log_reason(err, errlen, "%s", "");
    struct stat st;
    if (!file_or_dir || stat(file_or_dir, &st) != 0) {
        log_reason(err, errlen, "cannot open allow-list %s: %s",
                   file_or_dir ? file_or_dir : "(null)",
                   file_or_dir ? strerror(errno) : "no path");
        return NULL;
    }
    if (st.st_mode & S_IWOTH) {
        log_reason(err, errlen,
                   "allow-list %s is writable by others; refusing it",
                   file_or_dir);
        return NULL;
    }
    curve_allow_t *self = calloc(1, sizeof *self);
    if (!self) {
        log_reason(err, errlen, "out of memory");
        return NULL;
    }
    bool ok = S_ISDIR(st.st_mode)
                  ? s_allow_dir(self, file_or_dir, err, errlen)
                  : s_allow_file(self, file_or_dir, err, errlen);
    if (ok && self->count == 0) {
        log_reason(err, errlen, "allow-list %s holds no public key",
                   file_or_dir);
        ok = false;
    }
    if (!ok) curve_allow_destroy(&self);
    return self;
}

/* ---- socket setup ---- */

/* Whether a socket can be set up with CURVE and key (named what in the
 * log line when it is not a key). */
static bool s_setup_ready(const char *key, const char *what)
{
    if (!curve_available()) {
        log_error("CURVE: this libzmq was built without CURVE support");
        return false;
    }
    if (!s_key_ok(key)) {
        log_error("CURVE: the %s is not a %d-character Z85 key", what,
                  CURVE_KEY_LEN);
        return false;
    }
    return true;
}

bool curve_server_setup(void *socket, const char *secret_z85)
{
    if (!s_setup_ready(secret_z85, "server secret key")) return false;
    int on = 1;
    if (zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &on, sizeof on) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, secret_z85,
                       CURVE_KEY_LEN) != 0 ||
        zmq_setsockopt(socket, ZMQ_ZAP_DOMAIN, CURVE_ZAP_DOMAIN,
                       strlen(CURVE_ZAP_DOMAIN)) != 0) {
        log_error("CURVE: cannot set up the server socket: %s",
                  zmq_strerror(errno));
        return false;
    }
    return true;
}

bool curve_client_setup(void *socket, const char *server_public_z85,
                        const char *client_secret_z85)
{
    if (!s_setup_ready(server_public_z85, "server public key")) return false;
    char client_public[CURVE_KEY_LEN + 1];
    if (!curve_public_from_secret(client_secret_z85, client_public))
        return false;
    if (zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, server_public_z85,
                       CURVE_KEY_LEN) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, client_public,
                       CURVE_KEY_LEN) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, client_secret_z85,
                       CURVE_KEY_LEN) != 0) {
        log_error("CURVE: cannot set up the client socket: %s",
                  zmq_strerror(errno));
        return false;
    }
    return true;
}
