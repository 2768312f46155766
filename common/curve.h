/* common/curve.h - CURVE security for mapper's ZeroMQ sockets: key files,
 * the allow-list of worker keys, socket setup and the ZAP handler (RFC 27). */
#ifndef MAPPER_CURVE_H
#define MAPPER_CURVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#define CURVE_KEY_LEN      40 /* Z85 text of a 32-byte key */
#define CURVE_KEY_BYTES    32 /* a CURVE key, binary */
#define CURVE_ZAP_DOMAIN   "mapper"
#define CURVE_ZAP_ENDPOINT "inproc://zeromq.zap.01" /* fixed by RFC 27 */
#define CURVE_ZAP_VERSION  "1.0"                    /* the one we speak */
/* A ZAP request has at most this many frames worth reading (version, id,
 * domain, address, routing id, mechanism, two PLAIN credentials); more are
 * drained and the request refused. */
#define CURVE_ZAP_MAX_FRAMES 8
/* Peer address and mechanism text kept for a log line. */
#define CURVE_ZAP_TEXT_MAX 64
/* A key file longer than this is refused unread. */
#define CURVE_KEY_FILE_MAX 256
/* A buffer this big holds any message the err-writing functions produce. */
#define CURVE_ERR_MAX 512

#define CURVE_WUR __attribute__((warn_unused_result))

/* True when this libzmq was built with CURVE (zmq_has("curve")). */
bool curve_available(void);

/* Create a new key pair: NAME.key (the secret key, Z85 + "\n", mode 0600,
 * created with O_EXCL so it never overwrites) and NAME.pub (the public key,
 * Z85 + "\n", mode 0644 whatever the umask). Refuses when either file
 * exists, and then touches nothing. On failure nothing is left behind and a
 * one-line message naming the file is written into err; nothing is logged
 * (the caller reports it). */
bool curve_keygen(const char *name, char *err, size_t errlen) CURVE_WUR;

/* Read a key file holding exactly 40 Z85 characters, optionally followed by
 * whitespace (a newline), nothing else; the key must decode. With secret
 * set, a file that group or others may access (mode & 077, as ssh checks)
 * is refused. On success out holds the NUL-terminated Z85 text; on failure
 * out is "" and err a one-line message naming the file. Nothing is logged. */
bool curve_read_key(const char *path, bool secret, char out[CURVE_KEY_LEN + 1],
                    char *err, size_t errlen) CURVE_WUR;

/* Derive the Z85 public key of a Z85 secret key (zmq_curve_public). False,
 * logged, when secret_z85 is not a 40-character Z85 key. */
bool curve_public_from_secret(const char *secret_z85,
                              char public_out[CURVE_KEY_LEN + 1]) CURVE_WUR;

/* The allow-list of worker public keys. */
typedef struct curve_allow curve_allow_t;

/* Load an allow-list from a FILE (one Z85 key per line; blank lines,
 * '#' comment lines and a '#' comment after a key are allowed) or a DIR
 * (every *.pub key file in it, read with curve_read_key). Any bad line or
 * file fails the whole load (fail closed), as does a list with no key or a
 * file, directory or *.pub file writable by others. NULL on failure with a
 * one-line message in err; nothing is logged. (A Z85 key never starts with
 * '#'.) */
curve_allow_t *curve_allow_load(const char *file_or_dir, char *err,
                                size_t errlen);

/* An empty allow-list, or NULL (logged) when out of memory. */
curve_allow_t *curve_allow_new(void);

/* Add one Z85 public key; adding a key already present changes nothing.
 * False, logged, when the text is not a 40-character Z85 key. */
bool curve_allow_add(curve_allow_t *allow, const char *public_z85) CURVE_WUR;

/* True when the binary key is on the list (a NULL list holds nothing). */
bool curve_allow_has(const curve_allow_t *allow,
                     const uint8_t key[CURVE_KEY_BYTES]);

/* How many distinct keys the list holds. */
size_t curve_allow_count(const curve_allow_t *allow);

/* Free the list; accepts NULL and sets *self_p to NULL. */
void curve_allow_destroy(curve_allow_t **self_p);

/* Make socket a CURVE server with this secret key, in ZAP domain
 * CURVE_ZAP_DOMAIN. Call before bind, and after curve_zap_new: without a
 * ZAP handler libzmq lets ANY client key in. False, logged, on a bad key. */
bool curve_server_setup(void *socket, const char *secret_z85) CURVE_WUR;

/* Make socket a CURVE client of the server with that public key, using the
 * client's secret key (its public key is derived). Call before connect.
 * False, logged, on a bad key. */
bool curve_client_setup(void *socket, const char *server_public_z85,
                        const char *client_secret_z85) CURVE_WUR;

/* The ZAP handler: a REP socket bound to CURVE_ZAP_ENDPOINT on ctx, served
 * from the caller's single-threaded zmq_poll loop. It allows mechanism CURVE
 * with a client key on the list (status 200, User-Id = the key's Z85 text)
 * and refuses everything else (400; 500 for a malformed request) with one
 * log_warn line naming the peer address and the key refused. */
typedef struct curve_zap curve_zap_t;

/* Bind the handler on ctx; allow is borrowed and must outlive it. Create it
 * BEFORE any CURVE server socket binds, and destroy it only after they are
 * closed. NULL, logged, on failure (e.g. another handler is bound). */
curve_zap_t *curve_zap_new(void *ctx, const curve_allow_t *allow);

/* The handler's socket, for the caller's zmq_poll (ZMQ_POLLIN). */
void *curve_zap_socket(curve_zap_t *zap);

/* Answer every pending request without blocking. Malformed requests are
 * refused or, when they carry no envelope, dropped by the REP socket. */
void curve_zap_handle(curve_zap_t *zap);

/* How many requests were answered with a status other than 200. */
size_t curve_zap_refused(const curve_zap_t *zap);

/* Close the socket and free the handler; accepts NULL, sets *self_p NULL. */
void curve_zap_destroy(curve_zap_t **self_p);

/* Copy the authenticated identity of a received message (the "User-Id"
 * property set by the ZAP handler: the client key's Z85 text) into out,
 * at most n-1 bytes, NUL-terminated. False when the message has none. Ask
 * the payload frames: a ROUTER's routing-id frame carries no properties. */
bool curve_msg_user(zmq_msg_t *msg, char *out, size_t n) CURVE_WUR;

#endif
