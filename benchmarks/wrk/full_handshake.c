/* LD_PRELOAD for wrk over https: a full TLS handshake on every connection.
 *
 * wrk keeps one SSL object per connection slot and reuses it (SSL_shutdown + SSL_clear) for the
 * next connection, so it offers the last connection's session each time: after the first, every
 * handshake is a resumption, with no certificate and no signature, whatever the key type. This
 * drops that session before a handshake starts. Built by scripts/bench_lib/tls.py with gcc; no
 * OpenSSL headers needed: wrk has loaded libssl, which resolves these names at run time. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
int SSL_in_before(const SSL *ssl);
int SSL_set_session(SSL *ssl, void *session);

int SSL_connect(SSL *ssl) {
    static int (*real)(SSL *);
    if (real == NULL)
        real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
    if (SSL_in_before(ssl)) /* not on the retries of a handshake under way */
        SSL_set_session(ssl, NULL);
    return real(ssl);
}
