/*
 * bench/relay_uring.c: the cheapest possible proxy in a completion (io_uring) model, the
 * counterpart of relay_epoll.c.
 *
 *   relay_uring LISTEN_PORT UPSTREAM_PORT
 *
 * Same job as relay_epoll (one upstream connection per client, bytes copied both ways, no
 * protocol), but every socket always has one recv queued in the ring; a completed recv
 * queues a send of those bytes to the peer, a completed send queues the next recv. All the
 * operations a loop iteration queues go to the kernel in the one io_uring_enter that also
 * waits for the next completions (IORING_SETUP_DEFER_TASKRUN where the kernel has it), so
 * many clients' recvs and sends share one system call instead of costing one each.
 * bench/pgbench.sh builds it (with liburing, `apt-get install liburing-dev`) and runs it as
 * target `relay-uring`. A measuring instrument, not a product: no TLS, no limits.
 */
#define _GNU_SOURCE
#include <liburing.h>
#include <stdint.h>
#include <string.h>

#include "relay_common.h"

#define MAX_FD 65536
#define BUF 16384

enum op { OP_ACCEPT = 1, OP_RECV, OP_SEND };

/* Per socket: its peer (-1: none), its bytes read and not yet sent, and a generation that
 * tells a completion for a closed socket from one for a new socket with the same number. */
struct sock {
    int peer;
    uint32_t gen;
    char *buf;
    size_t off, len;
};
static struct sock socks[MAX_FD];
static struct io_uring ring;

static uint64_t tag(enum op op, int fd) {
    return ((uint64_t)op << 56) | ((uint64_t)socks[fd].gen << 24) | (uint64_t)fd;
}

static struct io_uring_sqe *next_sqe(void) {
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s) { /* ring full: hand what is queued to the kernel first */
        io_uring_submit(&ring);
        s = io_uring_get_sqe(&ring);
    }
    if (!s) {
        fprintf(stderr, "io_uring: no submission slot\n");
        exit(1);
    }
    return s;
}

static void queue_recv(int fd) {
    struct io_uring_sqe *s = next_sqe();
    io_uring_prep_recv(s, fd, socks[fd].buf, BUF, 0);
    io_uring_sqe_set_data64(s, tag(OP_RECV, fd));
}

/* Sends what `fd` read (from its offset) to its peer. */
static void queue_send(int fd) {
    struct io_uring_sqe *s = next_sqe();
    io_uring_prep_send(s, socks[fd].peer, socks[fd].buf + socks[fd].off, socks[fd].len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(s, tag(OP_SEND, fd));
}

static void queue_accept(int lfd) {
    struct io_uring_sqe *s = next_sqe();
    io_uring_prep_accept(s, lfd, NULL, NULL, 0);
    io_uring_sqe_set_data64(s, tag(OP_ACCEPT, lfd));
}

/* Closes fd; its peer is shut down, so that the peer's queued recv completes and closes it. */
static void close_sock(int fd) {
    int peer = socks[fd].peer;
    socks[fd].peer = -1;
    socks[fd].gen++;
    close(fd);
    if (peer >= 0 && socks[peer].peer == fd) {
        socks[peer].peer = -1;
        shutdown(peer, SHUT_RDWR);
    }
}

static void open_pair(int client, const struct sockaddr_in *upstream) {
    int server = client < MAX_FD ? relay_connect(upstream) : -1;
    if (server < 0 || server >= MAX_FD) {
        close(client);
        if (server >= 0) close(server);
        return;
    }
    relay_nodelay(client);
    int fds[2] = {client, server};
    for (int i = 0; i < 2; i++) {
        struct sock *s = &socks[fds[i]];
        s->peer = fds[1 - i];
        s->off = s->len = 0;
        if (!s->buf && !(s->buf = malloc(BUF))) {
            perror("malloc");
            exit(1);
        }
        queue_recv(fds[i]);
    }
}

int main(int argc, char **argv) {
    struct sockaddr_in upstream;
    int lfd = relay_listen(argc, argv, 0, &upstream);
    for (int i = 0; i < MAX_FD; i++) socks[i].peer = -1;

    struct io_uring_params params = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
    if (io_uring_queue_init_params(4096, &ring, &params) < 0) {
        memset(&params, 0, sizeof params); /* kernels before 6.1 */
        int rc = io_uring_queue_init_params(4096, &ring, &params);
        if (rc < 0) {
            fprintf(stderr, "io_uring_queue_init: %s\n", strerror(-rc));
            return 1;
        }
    }
    queue_accept(lfd);

    for (;;) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            uint64_t data = io_uring_cqe_get_data64(cqe);
            enum op op = (enum op)(data >> 56);
            int fd = (int)(data & 0xffffff), res = cqe->res;
            if (op == OP_ACCEPT) {
                queue_accept(lfd);
                if (res >= 0) open_pair(res, &upstream);
                continue;
            }
            if ((uint32_t)(data >> 24) != socks[fd].gen) continue; /* for a closed socket */
            if (socks[fd].peer < 0) { /* the peer closed: this was our recv's last word */
                socks[fd].gen++;
                close(fd);
                continue;
            }
            if (op == OP_RECV) {
                if (res <= 0) {
                    close_sock(fd);
                    continue;
                }
                socks[fd].off = 0;
                socks[fd].len = (size_t)res;
                queue_send(fd);
            } else if (res <= 0) {
                close_sock(fd);
            } else {
                socks[fd].off += (size_t)res;
                socks[fd].len -= (size_t)res;
                if (socks[fd].len) queue_send(fd);
                else queue_recv(fd);
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}
