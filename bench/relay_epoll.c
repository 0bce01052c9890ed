/*
 * bench/relay_epoll.c: the cheapest possible proxy in a readiness (epoll) model, to measure
 * the floor under any pooler built that way (PgBouncer, and this pooler on tokio).
 *
 *   relay_epoll LISTEN_PORT UPSTREAM_PORT
 *
 * Each client connection on 127.0.0.1:LISTEN_PORT gets its own connection to
 * 127.0.0.1:UPSTREAM_PORT (no pooling, no protocol: PostgreSQL's startup and authentication
 * pass through), and bytes are copied both ways by one thread with one level-triggered
 * epoll loop: per readiness event one recv and one send of what it read, the system calls
 * a pooler cannot avoid in a readiness model. What this process costs per transaction is
 * therefore the kernel's price for relaying it, with next to no user-space work on top.
 * bench/pgbench.sh builds and runs it as target `relay-epoll`; it is a measuring instrument,
 * not a product: no TLS, no limits, it waits in poll() when a peer's socket buffer is full.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>

#include "relay_common.h"

#define MAX_FD 65536
#define BUF 16384

static int peer[MAX_FD];

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void close_pair(int ep, int fd) {
    int other = peer[fd];
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    peer[fd] = -1;
    if (other >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, other, NULL);
        close(other);
        peer[other] = -1;
    }
}

/* Writes all of buf; waits in poll() when the peer's buffer is full. */
static int send_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, 10000) <= 0) return -1;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            return -1;
        }
    }
    return 0;
}

static void watch(int ep, int fd) {
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
}

int main(int argc, char **argv) {
    struct sockaddr_in upstream;
    int lfd = relay_listen(argc, argv, SOCK_NONBLOCK, &upstream);
    memset(peer, -1, sizeof peer);
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    watch(ep, lfd);

    static char buf[BUF];
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                if (c < 0 || c >= MAX_FD) {
                    if (c >= 0) close(c);
                    continue;
                }
                int s = relay_connect(&upstream);
                if (s < 0 || s >= MAX_FD || fcntl(s, F_SETFL, O_NONBLOCK) < 0) {
                    if (s >= 0) close(s);
                    close(c);
                    continue;
                }
                relay_nodelay(c);
                peer[c] = s;
                peer[s] = c;
                watch(ep, c);
                watch(ep, s);
                continue;
            }
            if (peer[fd] < 0) continue; /* closed earlier in this batch */
            ssize_t got = recv(fd, buf, BUF, 0);
            if (got > 0) {
                if (send_all(peer[fd], buf, (size_t)got) < 0) close_pair(ep, fd);
            } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                close_pair(ep, fd);
            }
        }
    }
}
