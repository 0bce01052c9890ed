/*
 * bench/relay_common.h: the setup bench/relay_epoll.c and bench/relay_uring.c share: their
 * arguments, the listening socket and the connection to PostgreSQL.
 */
#ifndef RELAY_COMMON_H
#define RELAY_COMMON_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* Reads `LISTEN_PORT UPSTREAM_PORT` into *upstream (127.0.0.1) and returns a socket listening
 * on 127.0.0.1:LISTEN_PORT, made with `flags` (e.g. SOCK_NONBLOCK); exits on any error. */
static int relay_listen(int argc, char **argv, int flags, struct sockaddr_in *upstream) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_PORT\n", argv[0]);
        exit(2);
    }
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    *upstream = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, "127.0.0.1", &at.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &upstream->sin_addr);
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | flags, 0);
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&at, sizeof at) < 0 || listen(fd, 1024) < 0) {
        perror("listen");
        exit(1);
    }
    return fd;
}

/* Small messages go out at once, as a pooler sends them. */
static void relay_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* A (blocking) connection to the upstream with TCP_NODELAY; -1 on failure. */
static int relay_connect(const struct sockaddr_in *upstream) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (connect(fd, (const struct sockaddr *)upstream, sizeof *upstream) < 0) {
        close(fd);
        return -1;
    }
    relay_nodelay(fd);
    return fd;
}

#endif
