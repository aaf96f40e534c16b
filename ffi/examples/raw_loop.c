/*
 * raw_loop.c: p2pcore's raw core mode, for engines that own their socket and
 * clock. This program's own UDP socket and CLOCK_MONOTONIC drive a p2p_core;
 * a server and an "echo" peer run in the same process in hosted thread mode
 * (their own sockets and network threads) so there is a network to talk to.
 *
 * The raw peer sends 100 numbered reliable messages to the echo peer by its
 * node ID and checks that the echoes come back exactly once and in order.
 * Exits 0 on success, 1 on an error or after 30 s. POSIX (IPv4 on loopback).
 *
 *   cc -std=c99 -I ffi/include ffi/examples/raw_loop.c -L target/debug \
 *      -lp2pcore_ffi -Wl,-rpath,target/debug -o raw_loop && ./raw_loop
 */
#define _POSIX_C_SOURCE 200809L
#include "p2pcore.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MESSAGES 100
#define EVENTS 32

static void fail(p2p_result r, const char *what) {
    char message[512];
    p2p_last_error(message, sizeof message);
    fprintf(stderr, "raw_loop: %s failed: %s\n  %s\n", what, p2p_result_str(r), message);
    exit(1);
}

/* The engine's clock: monotonic microseconds. */
static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void to_sockaddr(const p2p_addr *a, struct sockaddr_in *out) {
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons(a->port);
    memcpy(&out->sin_addr, a->ip, 4);
}

static void from_sockaddr(const struct sockaddr_in *in, p2p_addr *out) {
    memset(out, 0, sizeof *out);
    out->family = P2P_AF_IPV4;
    out->port = ntohs(in->sin_port);
    memcpy(out->ip, &in->sin_addr, 4);
}

static p2p_config config(uint32_t role, const char *name, const char *bootstrap) {
    p2p_config cfg;
    p2p_config_default(&cfg);
    cfg.role = role;
    cfg.name = name;
    cfg.bind = "127.0.0.1:0";
    cfg.bootstrap = bootstrap;
    return cfg;
}

static p2p_node *hosted(uint32_t role, const char *name, const char *bootstrap) {
    p2p_config cfg = config(role, name, bootstrap);
    p2p_node *node = NULL;
    p2p_result r = p2p_node_create(&cfg, &node);
    if (r < 0) fail(r, "p2p_node_create");
    if ((r = p2p_node_start_thread(node)) < 0) fail(r, "p2p_node_start_thread");
    return node;
}

/* The echo peer (thread mode: any thread may poll it): sends every message
 * back on its channel. */
static void echo(p2p_node *node) {
    p2p_event events[EVENTS];
    int n, i;
    while ((n = p2p_poll_events(node, events, EVENTS)) > 0) {
        for (i = 0; i < n; i++) {
            p2p_message *m = events[i].message;
            if (events[i].kind != P2P_EVENT_MESSAGE) continue;
            if (p2p_send(node, &m->from, m->channel, m->data, m->len, P2P_SEND_RELIABLE) < 0) fail(-1, "echo");
            p2p_message_release(m);
        }
    }
}

int main(void) {
    p2p_node *server = hosted(P2P_ROLE_SERVER, "server", NULL);
    p2p_node *echoer;
    p2p_core *core = NULL;
    p2p_node_id echo_id;
    p2p_addr server_addr, local;
    p2p_config cfg;
    p2p_event events[EVENTS];
    struct sockaddr_in sin;
    socklen_t sin_len = sizeof sin;
    char bootstrap[P2P_ADDR_STR_LEN];
    uint32_t len = sizeof bootstrap;
    uint8_t buf[2048];
    uint64_t start = now_us(), deadline;
    int fd, sent = 0, echoed = 0, has_deadline = 0, i, n;
    p2p_result r;

    p2p_node_local_addr(server, &server_addr);
    p2p_addr_format(&server_addr, bootstrap, &len);
    echoer = hosted(P2P_ROLE_PEER, "echo", bootstrap);
    p2p_node_get_id(echoer, &echo_id);

    /* The engine's own socket. */
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        perror("socket");
        return 1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    getsockname(fd, (struct sockaddr *)&sin, &sin_len);
    from_sockaddr(&sin, &local);

    cfg = config(P2P_ROLE_PEER, "raw", bootstrap);
    if ((r = p2p_core_create(&cfg, now_us(), &core)) < 0) fail(r, "p2p_core_create");
    p2p_core_set_local_addrs(core, now_us(), &local, 1);

    while (echoed < MESSAGES) {
        p2p_transmit t;
        int wait_ms = 10;
        if (now_us() - start > 30000000u) {
            fprintf(stderr, "raw_loop: %d of %d echoes after 30 s\n", echoed, MESSAGES);
            return 1;
        }
        /* 1. every datagram that arrived */
        for (;;) {
            struct sockaddr_in from;
            socklen_t from_len = sizeof from;
            p2p_addr remote;
            ssize_t got = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &from_len);
            if (got < 0) break; /* EAGAIN: empty */
            from_sockaddr(&from, &remote);
            p2p_core_handle_datagram(core, now_us(), &remote, NULL, 0, buf, (uint32_t)got);
        }
        /* 2. timers: the deadline read at the end of the last round (reading
         * it now, before the transmits are drained, breaks the drain order) */
        if (has_deadline && deadline <= now_us()) p2p_core_handle_timeout(core, now_us());
        /* 3. transmits, then events (sending from an event is fine: drain again) */
        do {
            while ((n = p2p_core_poll_transmit(core, buf, sizeof buf, &t)) >= 0) {
                struct sockaddr_in to;
                to_sockaddr(&t.destination, &to);
                sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&to, sizeof to);
            }
            if (n != P2P_DONE) fail(n, "p2p_core_poll_transmit");
            n = p2p_core_poll_events(core, events, EVENTS);
            for (i = 0; i < n; i++) {
                p2p_event *e = &events[i];
                if (e->kind == P2P_EVENT_PEER_ONLINE && memcmp(&e->id, &echo_id, sizeof echo_id) == 0) {
                    for (; sent < MESSAGES; sent++) {
                        char text[32];
                        int64_t seq;
                        sprintf(text, "ping %d", sent);
                        seq = p2p_core_send(core, now_us(), &echo_id, 2, (const uint8_t *)text,
                                            (uint32_t)strlen(text), P2P_SEND_RELIABLE);
                        if (seq != sent) fail((p2p_result)seq, "p2p_core_send (sequence numbers count from 0)");
                    }
                } else if (e->kind == P2P_EVENT_MESSAGE) {
                    char want[32];
                    sprintf(want, "ping %d", echoed);
                    if (e->message->len != strlen(want) || memcmp(e->message->data, want, e->message->len) != 0) {
                        fprintf(stderr, "raw_loop: expected \"%s\", got \"%.*s\"\n", want, (int)e->message->len,
                                (const char *)e->message->data);
                        return 1;
                    }
                    echoed++;
                    p2p_message_release(e->message);
                }
            }
        } while (n > 0);
        /* 4. the next deadline bounds the wait */
        has_deadline = p2p_core_poll_timeout(core, &deadline) == P2P_OK;
        if (has_deadline) {
            uint64_t now = now_us();
            int until = deadline > now ? (int)((deadline - now + 999) / 1000) : 0;
            if (until < wait_ms) wait_ms = until;
        }
        /* 5. the other nodes of this demo, then sleep until the socket or the deadline */
        echo(echoer);
        {
            struct pollfd p;
            p.fd = fd;
            p.events = POLLIN;
            poll(&p, 1, wait_ms);
        }
    }
    printf("raw_loop: %d messages echoed in order in %llu ms\n", echoed,
           (unsigned long long)((now_us() - start) / 1000));

    /* A clean goodbye: close, and drive until the others were told. */
    p2p_core_close(core, now_us());
    deadline = now_us() + 2000000u;
    while (p2p_core_is_closed(core) == 0 && now_us() < deadline) {
        p2p_transmit t;
        struct sockaddr_in from;
        socklen_t from_len = sizeof from;
        ssize_t got;
        uint64_t next;
        while ((got = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &from_len)) >= 0) {
            p2p_addr remote;
            from_sockaddr(&from, &remote);
            p2p_core_handle_datagram(core, now_us(), &remote, NULL, 0, buf, (uint32_t)got);
            from_len = sizeof from;
        }
        p2p_core_handle_timeout(core, now_us());
        while ((n = p2p_core_poll_transmit(core, buf, sizeof buf, &t)) >= 0) {
            struct sockaddr_in to;
            to_sockaddr(&t.destination, &to);
            sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&to, sizeof to);
        }
        while ((n = p2p_core_poll_events(core, events, EVENTS)) > 0)
            for (i = 0; i < n; i++) p2p_message_release(events[i].message);
        if (p2p_core_poll_timeout(core, &next) == P2P_OK) {
            struct pollfd p;
            uint64_t now = now_us();
            p.fd = fd;
            p.events = POLLIN;
            poll(&p, 1, next > now ? (int)((next - now + 999) / 1000) : 0);
        }
    }
    p2p_core_free(core);
    close(fd);
    p2p_node_free(echoer);
    p2p_node_free(server);
    return 0;
}
