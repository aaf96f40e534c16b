/*
 * chat.c: a server and two peers (alice and bob) in one process, talking by
 * node ID through p2pcore's hosted API, on loopback.
 *
 * Each peer greets every peer that comes online; each answers every greeting.
 * The program exits 0 once both peers got a greeting and an answer, printing
 * the path and the Master they see; 1 on an error or after 30 s.
 *
 *   cc -std=c99 -I ffi/include ffi/examples/chat.c -L target/debug \
 *      -lp2pcore_ffi -Wl,-rpath,target/debug -o chat && ./chat
 *
 * With the argument "thread", every node runs on a network thread of its own
 * (p2p_node_start_thread) and the loop only polls events. With "lookup", the
 * peers take no directory (peer.directory = lookup, as in networks of
 * thousands of peers): each finds the other by name with p2p_lookup_name.
 */
#include "p2pcore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVENTS 64

struct peer {
    const char *name;
    const char *other; /* the name it looks up, in lookup mode */
    p2p_node *node;
    int64_t lookup; /* the running lookup's id, or -1 */
    int found; /* the other peer was found */
    int by_lookup; /* lookup mode: greet what p2p_lookup_name found, not every peer online */
    int greeted; /* got a greeting */
    int answered; /* got an answer to its own greeting */
};

static void fail(p2p_result r, const char *what) {
    char message[512];
    p2p_last_error(message, sizeof message);
    fprintf(stderr, "chat: %s failed: %s\n  %s\n", what, p2p_result_str(r), message);
    exit(1);
}

static p2p_node *create(uint32_t role, const char *name, const char *bootstrap, int lookup) {
    p2p_config cfg;
    p2p_node *node = NULL;
    p2p_result r;
    p2p_config_default(&cfg);
    cfg.role = role;
    cfg.name = name;
    cfg.bind = "127.0.0.1:0";
    cfg.bootstrap = bootstrap;
    cfg.secret = "the chat example's network";
    /* Everything without a field of its own goes through p2p_config_set. */
    if ((r = p2p_config_set(&cfg, "peer.keep_alive_interval_ms", "5000")) < 0) fail(r, "p2p_config_set");
    if (lookup && (r = p2p_config_set(&cfg, "peer.directory", "lookup")) < 0) fail(r, "p2p_config_set");
    r = p2p_node_create(&cfg, &node);
    p2p_config_clear(&cfg);
    if (r < 0) fail(r, "p2p_node_create");
    return node;
}

static void say(struct peer *p, const p2p_node_id *to, const char *text) {
    int64_t seq = p2p_send(p->node, to, 1, (const uint8_t *)text, (uint32_t)strlen(text), P2P_SEND_RELIABLE);
    if (seq < 0) fail((p2p_result)seq, "p2p_send");
}

/* Handles one peer's events; the server's are only drained. */
static void handle(struct peer *p, p2p_event *events, int n) {
    int i;
    for (i = 0; i < n; i++) {
        p2p_event *e = &events[i];
        char id[P2P_NODE_ID_STR_LEN];
        uint32_t len = sizeof id;
        p2p_node_id_format(&e->id, id, &len);
        if ((e->kind == P2P_EVENT_PEER_ONLINE && !p->by_lookup) || (e->kind == P2P_EVENT_LOOKUP_DONE && e->count > 0)) {
            char text[128];
            if (e->kind == P2P_EVENT_LOOKUP_DONE) {
                if ((int64_t)e->first != p->lookup || p->found) continue;
                p->found = 1;
                printf("%s: found %s (%s) by name\n", p->name, e->name, id);
            } else {
                printf("%s: %s (%s) is online\n", p->name, e->name, id);
            }
            sprintf(text, "hello %s, this is %s", e->name, p->name);
            say(p, &e->id, text);
        } else if (e->kind == P2P_EVENT_LOOKUP_DONE && (int64_t)e->first == p->lookup) {
            p->lookup = -1; /* not online yet: asked again next frame */
        } else if (e->kind == P2P_EVENT_MESSAGE) {
            const p2p_message *m = e->message;
            printf("%s: from %.8s...: %.*s\n", p->name, id, (int)m->len, (const char *)m->data);
            if (m->len >= 5 && memcmp(m->data, "hello", 5) == 0) {
                p->greeted = 1;
                say(p, &m->from, "nice to meet you");
            } else {
                p->answered = 1;
            }
            p2p_message_release(e->message); /* the message is ours to release */
        } else if (e->kind == P2P_EVENT_SEND_FAILED) {
            fprintf(stderr, "%s: messages %llu..%llu to %s failed: %s\n", p->name, (unsigned long long)e->first,
                    (unsigned long long)e->last, id, e->text);
        }
    }
}

/* The server's events: nothing to do but release a message, should one come. */
static void drain(p2p_event *events, int n) {
    int i;
    for (i = 0; i < n; i++) p2p_message_release(events[i].message); /* NULL for non-messages */
}

static void report(struct peer *p, const p2p_node_id *other) {
    p2p_path_info path;
    p2p_master_info master;
    static const char *kinds[] = {"none", "direct", "punched", "relayed"};
    if (p2p_node_path(p->node, other, &path) == P2P_OK)
        printf("%s: path to the other peer: %s, RTT %llu us\n", p->name, kinds[path.kind & 3],
               (unsigned long long)path.rtt_us);
    if (p2p_node_master(p->node, &master) == P2P_OK && master.has_master)
        printf("%s: the Master is %s (basis %u, term %llu)\n", p->name, master.name, master.basis,
               (unsigned long long)master.term);
}

int main(int argc, char **argv) {
    int threaded = argc > 1 && strcmp(argv[1], "thread") == 0;
    int lookup = argc > 1 && strcmp(argv[1], "lookup") == 0;
    p2p_event events[EVENTS];
    p2p_node *server;
    struct peer peers[2] = {{"alice", "bob", NULL, -1, 0, 0, 0, 0}, {"bob", "alice", NULL, -1, 0, 0, 0, 0}};
    p2p_addr addr;
    p2p_node_id ids[2];
    char bootstrap[P2P_ADDR_STR_LEN];
    uint32_t len = sizeof bootstrap;
    int frame, i, n, code = 1;

    printf("p2pcore %s (header %s)\n", p2p_version(), P2P_VERSION);
    server = create(P2P_ROLE_SERVER, "server", NULL, 0);
    p2p_node_local_addr(server, &addr);
    p2p_addr_format(&addr, bootstrap, &len);
    for (i = 0; i < 2; i++) {
        peers[i].node = create(P2P_ROLE_PEER, peers[i].name, bootstrap, lookup);
        peers[i].by_lookup = lookup;
        p2p_node_get_id(peers[i].node, &ids[i]);
    }
    if (threaded) {
        p2p_result r;
        if ((r = p2p_node_start_thread(server)) < 0) fail(r, "p2p_node_start_thread");
        for (i = 0; i < 2; i++)
            if ((r = p2p_node_start_thread(peers[i].node)) < 0) fail(r, "p2p_node_start_thread");
    }

    /* The frame loop: service every node (waiting at most 10 ms in all),
     * then take their events. */
    for (frame = 0; frame < 3000; frame++) {
        p2p_node_service(server, 0);
        while ((n = p2p_poll_events(server, events, EVENTS)) > 0) drain(events, n);
        for (i = 0; i < 2; i++) {
            p2p_node_service(peers[i].node, i == 0 ? 10 : 0);
            if (lookup && !peers[i].found && peers[i].lookup < 0) {
                /* P2P_ERR_NETWORK_DOWN until the server link is up: ask again next frame. */
                peers[i].lookup = p2p_lookup_name(peers[i].node, peers[i].other);
            }
            while ((n = p2p_poll_events(peers[i].node, events, EVENTS)) > 0) handle(&peers[i], events, n);
            if (n < 0) fail(n, "p2p_poll_events");
        }
        if (peers[0].greeted && peers[0].answered && peers[1].greeted && peers[1].answered) {
            code = 0;
            break;
        }
    }
    if (code == 0) {
        report(&peers[0], &ids[1]);
        report(&peers[1], &ids[0]);
        printf("chat: done in %d frames\n", frame + 1);
    } else {
        fprintf(stderr, "chat: no conversation within 3000 frames\n");
    }
    for (i = 0; i < 2; i++) p2p_node_free(peers[i].node); /* closes first (bounded) */
    p2p_node_free(server);
    return code;
}
