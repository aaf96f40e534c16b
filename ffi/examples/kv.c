/*
 * kv.c: the cluster's replicated store from C. Three servers (each on a
 * network thread of its own) and two peers (alice and bob, driven by this
 * program's frame loop) in one process, on loopback.
 *
 * alice watches "room/"; bob writes there and alice sees it; bob reads what
 * alice wrote; both try to take a lock with a compare-and-set and exactly
 * one gets it; the loser reads the holder from the answer and takes it over
 * by expecting the holder's value. Exits 0 after "kv: done", 1 on an error
 * or after 60 s.
 *
 *   cc -std=c99 -I ffi/include ffi/examples/kv.c -L target/debug \
 *      -lp2pcore_ffi -Wl,-rpath,target/debug -o kv && ./kv
 */
#include "p2pcore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EVENTS 64
#define SERVERS 3

struct peer {
    const char *name;
    p2p_node *node;
    int raft; /* follows a Raft Master: the store has a leader and a quorum */
    int64_t watch; /* its watch id, or -1 */
    int saw_put; /* its watch reported room/bob=here */
    int deletes; /* deletes its watch reported */
};

static struct peer peers[2] = {{"alice", NULL, 0, -1, 0, 0}, {"bob", NULL, 0, -1, 0, 0}};
static time_t started;

static void fail(p2p_result r, const char *what) {
    char message[512];
    p2p_last_error(message, sizeof message);
    fprintf(stderr, "kv: %s failed: %s\n  %s\n", what, p2p_result_str(r), message);
    exit(1);
}

static void die(const char *what) {
    fprintf(stderr, "kv: %s\n", what);
    exit(1);
}

static p2p_node *create(uint32_t role, const char *name, const char *bootstrap) {
    p2p_config cfg;
    p2p_node *node = NULL;
    p2p_result r;
    p2p_config_default(&cfg);
    cfg.role = role;
    cfg.name = name;
    cfg.bind = "127.0.0.1:0";
    cfg.bootstrap = bootstrap;
    cfg.secret = "the kv example's network";
    r = p2p_node_create(&cfg, &node);
    if (r < 0) fail(r, "p2p_node_create");
    return node;
}

static void check_time(void) {
    if (time(NULL) - started > 60) die("not done within 60 s");
}

static const char *str(const uint8_t *bytes, uint32_t len, char *buf, size_t size) {
    size_t n = len < size - 1 ? len : size - 1;
    if (n) memcpy(buf, bytes, n);
    buf[n] = 0;
    return buf;
}

/* One peer's events: watch changes are recorded; a store answer with id
 * `want` is copied to *out (1 returned); everything else is released. */
static int handle(struct peer *p, p2p_event *events, int n, int64_t want, p2p_event *out) {
    int i, found = 0;
    for (i = 0; i < n; i++) {
        p2p_event *e = &events[i];
        if (e->kind == P2P_EVENT_MASTER_CHANGED && e->code == P2P_MASTER_RAFT) p->raft = 1;
        if (e->kind == P2P_EVENT_KV_WATCH && (int64_t)e->first == p->watch) {
            uint32_t j;
            for (j = 0; j < e->count; j++) { /* oldest first */
                const p2p_kv_entry *c = &e->kv->entries[j];
                char key[64], value[64];
                str(c->key, c->key_len, key, sizeof key);
                str(c->value, c->value_len, value, sizeof value);
                printf("%s: watch %lld: %s %s%s%s at revision %llu\n", p->name, (long long)p->watch,
                       c->kind == P2P_KV_DELETE ? "delete" : "put", key, c->kind == P2P_KV_DELETE ? "" : " = ",
                       value, (unsigned long long)c->mod_revision);
                if (c->kind == P2P_KV_DELETE) p->deletes++;
                else if (strcmp(key, "room/bob") == 0 && strcmp(value, "here") == 0) p->saw_put = 1;
            }
        } else if (e->kind == P2P_EVENT_KV_WATCH_ENDED) {
            fprintf(stderr, "%s: watch %llu ended: %s\n", p->name, (unsigned long long)e->first, e->text);
            exit(1);
        }
        if (e->kind == P2P_EVENT_KV_DONE && (int64_t)e->first == want) {
            *out = *e; /* the entries move to the caller, who frees them */
            found = 1;
            continue;
        }
        p2p_message_release(e->message); /* NULL unless a message */
        p2p_kv_list_free(e->kv);         /* NULL unless store entries */
    }
    return found;
}

/* Runs the frame loop (both peers serviced, 5 ms at most per frame) until
 * `p`'s request `id` is answered, or only a frame when `id` is -1. */
static void frames(struct peer *p, int64_t id, p2p_event *out) {
    p2p_event events[EVENTS];
    int i, n, done = 0;
    while (!done) {
        check_time();
        for (i = 0; i < 2; i++) {
            p2p_node_service(peers[i].node, i == 0 ? 5 : 0);
            while ((n = p2p_poll_events(peers[i].node, events, EVENTS)) > 0)
                if (handle(&peers[i], events, n, &peers[i] == p ? id : -2, out)) done = 1;
            if (n < 0) fail(n, "p2p_poll_events");
        }
        if (id < 0) return;
    }
}

/* Waits for the answer to request `id` of `p`: fails on an error result. */
static p2p_event answer(struct peer *p, int64_t id, const char *what) {
    p2p_event e;
    if (id < 0) fail((p2p_result)id, what);
    frames(p, id, &e);
    if ((p2p_result)e.code != P2P_OK) {
        fprintf(stderr, "kv: %s: %s: %s\n", what, p2p_result_str((p2p_result)e.code), e.text);
        exit(1);
    }
    return e;
}

#define BYTES(s) (const uint8_t *)(s), (uint32_t)strlen(s)

int main(void) {
    p2p_node *servers[SERVERS];
    char bootstrap[SERVERS * P2P_ADDR_STR_LEN] = "";
    char value[64];
    p2p_event e, a, b;
    uint64_t revision;
    int i;

    started = time(NULL);
    for (i = 0; i < SERVERS; i++) {
        char name[16], addr_text[P2P_ADDR_STR_LEN];
        uint32_t len = sizeof addr_text;
        p2p_addr addr;
        p2p_result r;
        sprintf(name, "s%d", i + 1);
        servers[i] = create(P2P_ROLE_SERVER, name, i ? bootstrap : NULL);
        if ((r = p2p_node_start_thread(servers[i])) < 0) fail(r, "p2p_node_start_thread");
        p2p_node_local_addr(servers[i], &addr);
        p2p_addr_format(&addr, addr_text, &len);
        if (i) strcat(bootstrap, ",");
        strcat(bootstrap, addr_text);
    }
    for (i = 0; i < 2; i++) peers[i].node = create(P2P_ROLE_PEER, peers[i].name, bootstrap);
    /* Servers do not use the store: a typed error at once. */
    if (p2p_kv_get(servers[0], BYTES("x")) != P2P_ERR_KV_NOT_A_PEER) die("a server's request was not refused");
    p2p_last_error(value, sizeof value);
    printf("a server asking the store: %s\n", value);

    while (!peers[0].raft || !peers[1].raft) frames(NULL, -1, NULL);
    printf("both peers follow a Raft Master\n");

    /* A write, then a watch from the revision after it: nothing is missed. */
    e = answer(&peers[0], p2p_kv_put(peers[0].node, BYTES("room/topic"), BYTES("maps")), "put");
    printf("alice: put room/topic at revision %llu\n", (unsigned long long)e.last);
    peers[0].watch = p2p_kv_watch(peers[0].node, BYTES("room/"), e.last + 1);
    if (peers[0].watch < 0) fail((p2p_result)peers[0].watch, "p2p_kv_watch");

    /* bob reads alice's write, and writes where alice watches. */
    e = answer(&peers[1], p2p_kv_get(peers[1].node, BYTES("room/topic")), "get");
    if (e.count != 1 || e.kv == NULL) die("bob's get found nothing");
    printf("bob: get room/topic = %s (version %llu) at revision %llu\n",
           str(e.kv->entries[0].value, e.kv->entries[0].value_len, value, sizeof value),
           (unsigned long long)e.kv->entries[0].version, (unsigned long long)e.last);
    p2p_kv_list_free(e.kv);
    e = answer(&peers[1], p2p_kv_put(peers[1].node, BYTES("room/bob"), BYTES("here")), "put");
    revision = e.last;
    while (!peers[0].saw_put) frames(NULL, -1, NULL);

    /* The lock: both ask at once for "create if missing"; one wins. */
    {
        int64_t ia = p2p_kv_cas(peers[0].node, BYTES("lock"), NULL, 0, BYTES("alice"));
        int64_t ib = p2p_kv_cas(peers[1].node, BYTES("lock"), NULL, 0, BYTES("bob"));
        struct peer *loser;
        p2p_event *lost;
        a = answer(&peers[0], ia, "cas");
        b = answer(&peers[1], ib, "cas");
        if (!(a.flags & P2P_EVENT_FLAG_KV_SUCCEEDED) == !(b.flags & P2P_EVENT_FLAG_KV_SUCCEEDED))
            die("not exactly one cas won");
        loser = (a.flags & P2P_EVENT_FLAG_KV_SUCCEEDED) ? &peers[1] : &peers[0];
        lost = loser == &peers[1] ? &b : &a;
        /* The loser's answer carries the holder's entry. */
        if (lost->count != 1) die("a failed cas did not read the key");
        str(lost->kv->entries[0].value, lost->kv->entries[0].value_len, value, sizeof value);
        printf("%s: the lock is held by %s\n", loser->name, value);
        p2p_kv_list_free(a.kv);
        p2p_kv_list_free(b.kv);
        /* Take it over by expecting exactly the holder's value. */
        e = answer(loser, p2p_kv_cas(loser->node, BYTES("lock"), BYTES(value), BYTES(loser->name)), "cas");
        if (!(e.flags & P2P_EVENT_FLAG_KV_SUCCEEDED) || e.last <= revision) die("the take-over failed");
        printf("%s: took the lock over at revision %llu\n", loser->name, (unsigned long long)e.last);
    }

    /* A prefix read with a limit says there is more; a delete says how many. */
    e = answer(&peers[0], p2p_kv_get_prefix(peers[0].node, BYTES("room/"), 1), "get_prefix");
    if (e.count != 1 || !(e.flags & P2P_EVENT_FLAG_KV_MORE)) die("a read with limit 1 did not say there is more");
    p2p_kv_list_free(e.kv);
    e = answer(&peers[1], p2p_kv_delete_prefix(peers[1].node, BYTES("room/")), "delete_prefix");
    printf("bob: deleted %u key(s) under room/\n", e.count);
    if (e.count != 2) die("the prefix delete did not remove both keys");
    while (peers[0].deletes < 2) frames(NULL, -1, NULL);

    if (p2p_kv_unwatch(peers[0].node, (uint64_t)peers[0].watch) != P2P_OK) die("unwatch failed");
    if (p2p_kv_unwatch(peers[0].node, (uint64_t)peers[0].watch) != P2P_ERR_NOT_FOUND)
        die("a second unwatch was not P2P_ERR_NOT_FOUND");
    printf("kv: done\n");
    for (i = 0; i < 2; i++) p2p_node_free(peers[i].node);
    for (i = 0; i < SERVERS; i++) p2p_node_free(servers[i]);
    return 0;
}
