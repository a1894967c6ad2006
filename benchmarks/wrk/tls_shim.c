/* LD_PRELOAD for wrk over https (scripts/bench --tls), for two things wrk 4 does on its own:
 *
 * - While a handshake waits for the server, wrk keeps the socket registered for writing as well
 *   as reading, and its event loop calls SSL_connect again at every turn: a connection whose
 *   server has not answered yet (queued behind busy workers) keeps wrk's thread spinning and
 *   takes CPU from the servers on the same machine. Here a handshake that waits to read leaves
 *   the socket registered for reading only, until wrk registers it again when the handshake is
 *   done (it asks for reading and writing then, as before).
 * - wrk keeps one SSL object per connection slot and reuses it for the next connection
 *   (SSL_shutdown + SSL_clear), so it offers the last connection's session each time: after the
 *   first, every handshake is a resumption, with no certificate and no signature. With
 *   WRK_FULL_HANDSHAKE=1 in the environment that session is dropped before a handshake starts.
 *
 * Built by scripts/bench_lib/tls.py with gcc; no OpenSSL headers needed: wrk has loaded libssl,
 * which resolves these names at run time. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

typedef struct ssl_st SSL;
int SSL_in_before(const SSL *ssl);
int SSL_set_session(SSL *ssl, void *session);
int SSL_get_fd(const SSL *ssl);
int SSL_get_error(const SSL *ssl, int ret);
#define SSL_ERROR_WANT_READ 2

#define MAX_FDS 65536
static int epoll_of[MAX_FDS]; /* fd -> the epoll fd + 1 that wrk registered it with; 0: none */

static int real_epoll_ctl(int epfd, int op, int fd, struct epoll_event *event) {
    static int (*real)(int, int, int, struct epoll_event *);
    if (real == NULL)
        real = (int (*)(int, int, int, struct epoll_event *))dlsym(RTLD_NEXT, "epoll_ctl");
    return real(epfd, op, fd, event);
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event) {
    if (fd >= 0 && fd < MAX_FDS)
        epoll_of[fd] = op == EPOLL_CTL_DEL ? 0 : epfd + 1;
    return real_epoll_ctl(epfd, op, fd, event);
}

int SSL_connect(SSL *ssl) {
    static int (*real)(SSL *);
    static int full = -1;
    if (real == NULL)
        real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
    if (full < 0) {
        const char *value = getenv("WRK_FULL_HANDSHAKE");
        full = value != NULL && strcmp(value, "1") == 0;
    }
    if (full && SSL_in_before(ssl)) /* not on the later calls of a handshake under way */
        SSL_set_session(ssl, NULL);
    int r = real(ssl);
    if (r != 1 && SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ) {
        int fd = SSL_get_fd(ssl);
        if (fd >= 0 && fd < MAX_FDS && epoll_of[fd]) {
            struct epoll_event event = {.events = EPOLLIN, .data.fd = fd}; /* wrk's ae keys events by fd */
            real_epoll_ctl(epoll_of[fd] - 1, EPOLL_CTL_MOD, fd, &event);
        }
    }
    return r;
}
