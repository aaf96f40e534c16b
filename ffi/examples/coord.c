/*
 * coord.c: coordination from C: sessions, a lock with a fencing token, an
 * election, a queue and a registry of live instances. Three servers (each
 * on a network thread of its own) and two peers (alice and bob, driven by
 * this program's frame loop) in one process, on loopback.
 *
 * Both peers open a session; alice takes a lock and bob's try-lock times
 * out; alice campaigns and bob reads who leads; bob pushes two tickets
 * that alice pops (highest priority first) while she watches the queue's
 * length; alice registers a game server and bob finds it, and no longer
 * once it is full; then everything is released and the sessions closed.
 * Exits 0 after "coord: done", 1 on an error or after 60 s.
 *
 *   cc -std=c99 -I ffi/include ffi/examples/coord.c -L target/debug \
 *      -lp2pcore_ffi -Wl,-rpath,target/debug -o coord && ./coord
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
    int raft;         /* follows a Raft Master: the store has a leader and a quorum */
    int64_t qwatch;   /* its queue-length watch, or -1 */
    long qlen;        /* the length it last reported, or -1 */
};

static struct peer peers[2] = {{"alice", NULL, 0, -1, -1}, {"bob", NULL, 0, -1, -1}};
#define ALICE (&peers[0])
#define BOB (&peers[1])
static time_t started;

static void fail(p2p_result r, const char *what) {
    char message[512];
    p2p_last_error(message, sizeof message);
    fprintf(stderr, "coord: %s failed: %s\n  %s\n", what, p2p_result_str(r), message);
    exit(1);
}

static void die(const char *what) {
    fprintf(stderr, "coord: %s\n", what);
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
    cfg.secret = "the coord example's network";
    r = p2p_node_create(&cfg, &node);
    if (r < 0) fail(r, "p2p_node_create");
    return node;
}

static const char *str(const uint8_t *bytes, uint32_t len, char *buf, size_t size) {
    size_t n = len < size - 1 ? len : size - 1;
    if (n) memcpy(buf, bytes, n);
    buf[n] = 0;
    return buf;
}

static int is_coord(uint32_t kind) {
    return kind >= P2P_EVENT_COORD_LOCK_ACQUIRED && kind <= P2P_EVENT_COORD_ENDED;
}

/* What a frame loop waits for: the answer to store request `id`
 * (P2P_EVENT_KV_DONE), or the next event of coordination request `id`. */
struct want {
    struct peer *peer;
    int64_t id;
    int coord;
};

/* One peer's events: queue lengths are recorded; the awaited event is
 * copied to *out (1 returned, its list now the caller's); the rest is
 * released. */
static int handle(struct peer *p, p2p_event *events, int n, const struct want *w, p2p_event *out) {
    int i, found = 0;
    for (i = 0; i < n; i++) {
        p2p_event *e = &events[i];
        if (e->kind == P2P_EVENT_MASTER_CHANGED && e->code == P2P_MASTER_RAFT) p->raft = 1;
        if (e->kind == P2P_EVENT_COORD_QUEUE_LENGTH && (int64_t)e->first == p->qwatch) {
            p->qlen = (long)e->count;
            printf("%s: the queue holds %u item(s)\n", p->name, e->count);
            continue;
        }
        if (!found && w && w->peer == p && (int64_t)e->first == w->id &&
            (w->coord ? is_coord(e->kind) : e->kind == P2P_EVENT_KV_DONE)) {
            *out = *e; /* the entries move to the caller, who frees them */
            found = 1;
            continue;
        }
        p2p_message_release(e->message); /* NULL unless a message */
        p2p_kv_list_free(e->kv);         /* NULL unless entries */
    }
    return found;
}

/* Runs the frame loop (both peers serviced, 5 ms at most per frame) until
 * the awaited event came, or only a frame when `w` is NULL. */
static void frames(const struct want *w, p2p_event *out) {
    p2p_event events[EVENTS];
    int i, n, done = 0;
    while (!done) {
        if (time(NULL) - started > 60) die("not done within 60 s");
        for (i = 0; i < 2; i++) {
            p2p_node_service(peers[i].node, i == 0 ? 5 : 0);
            while ((n = p2p_poll_events(peers[i].node, events, EVENTS)) > 0)
                if (handle(&peers[i], events, n, w, out)) done = 1;
            if (n < 0) fail(n, "p2p_poll_events");
        }
        if (!w) return;
    }
}

/* The next event of coordination request `id` of `p` (fails on a refusal
 * at once). */
static p2p_event next(struct peer *p, int64_t id, const char *what) {
    struct want w;
    p2p_event e;
    if (id < 0) fail((p2p_result)id, what);
    w.peer = p;
    w.id = id;
    w.coord = 1;
    frames(&w, &e);
    return e;
}

/* The next event of `id`, which must be of `kind`. */
static p2p_event expect(struct peer *p, int64_t id, uint32_t kind, const char *what) {
    p2p_event e = next(p, id, what);
    if (e.kind != kind) {
        fprintf(stderr, "coord: %s: event kind %u (code %s: %s), not %u\n", what, e.kind,
                p2p_result_str((p2p_result)e.code), e.text, kind);
        exit(1);
    }
    return e;
}

/* The answer to store request `id` of `p`: fails on an error result. */
static p2p_event kv_answer(struct peer *p, int64_t id, const char *what) {
    struct want w;
    p2p_event e;
    if (id < 0) fail((p2p_result)id, what);
    w.peer = p;
    w.id = id;
    w.coord = 0;
    frames(&w, &e);
    if ((p2p_result)e.code != P2P_OK) {
        fprintf(stderr, "coord: %s: %s: %s\n", what, p2p_result_str((p2p_result)e.code), e.text);
        exit(1);
    }
    return e;
}

static void release(struct peer *p, int64_t id, const char *what) {
    p2p_result r = p2p_coord_release(p->node, (uint64_t)id);
    if (r != P2P_OK) fail(r, what);
    expect(p, id, P2P_EVENT_COORD_RELEASED, what);
    if (p2p_coord_release(p->node, (uint64_t)id) != P2P_ERR_NOT_FOUND) die("a second release was not P2P_ERR_NOT_FOUND");
    printf("%s: released %s\n", p->name, what);
}

#define BYTES(s) (const uint8_t *)(s), (uint32_t)strlen(s)

int main(void) {
    p2p_node *servers[SERVERS];
    char bootstrap[SERVERS * P2P_ADDR_STR_LEN] = "";
    char text[128], value[64];
    uint64_t session[2];
    p2p_node_id alice_id, bob_id;
    int64_t lock, campaign, reg, id;
    p2p_event e;
    uint32_t j;
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
    p2p_node_get_id(ALICE->node, &alice_id);
    p2p_node_get_id(BOB->node, &bob_id);

    /* Mistakes are typed errors at once. */
    if (p2p_coord_lock(ALICE->node, "room", 0, -1, 0) != P2P_ERR_COORD_NO_SESSION) die("a lock without a session");
    p2p_last_error(text, sizeof text);
    printf("a lock without a session: %s\n", text);
    if (p2p_coord_pop(ALICE->node, "lobby", 0, 0) != P2P_ERR_INVALID_ARGUMENT) die("a pop of 0 items");
    if (p2p_coord_leader(servers[0], "host", 0) != P2P_ERR_KV_NOT_A_PEER) die("a server's request");

    while (!ALICE->raft || !BOB->raft) frames(NULL, NULL);
    printf("both peers follow a Raft Master\n");

    /* Sessions: what the locks, campaigns and registrations are bound to. */
    for (i = 0; i < 2; i++) {
        e = kv_answer(&peers[i], p2p_kv_session_open(peers[i].node, 10000), "p2p_kv_session_open");
        session[i] = e.last;
        printf("%s: session %llu open\n", peers[i].name, (unsigned long long)session[i]);
    }

    /* A lock: alice holds it, bob's try-lock (wait 0) gives up. */
    lock = p2p_coord_lock(ALICE->node, "room", session[0], -1, 1000);
    e = expect(ALICE, lock, P2P_EVENT_COORD_LOCK_ACQUIRED, "lock");
    printf("alice: holds the lock, fencing token %llu\n", (unsigned long long)e.last);
    e = expect(BOB, p2p_coord_lock(BOB->node, "room", session[1], 0, 0), P2P_EVENT_COORD_ENDED, "try-lock");
    if ((p2p_result)e.code != P2P_ERR_COORD_TIMEOUT) die("bob's try-lock did not time out");
    printf("bob: try-lock: %s\n", e.text);

    /* An election: alice campaigns, bob asks who leads. */
    campaign = p2p_coord_campaign(ALICE->node, "host", session[0], BYTES("alice:7777"), 0, 0);
    e = expect(ALICE, campaign, P2P_EVENT_COORD_ELECTED, "campaign");
    printf("alice: elected, term %llu\n", (unsigned long long)e.last);
    e = expect(BOB, p2p_coord_leader(BOB->node, "host", 0), P2P_EVENT_COORD_LEADER, "leader");
    if ((e.flags & P2P_EVENT_FLAG_COORD_NO_LEADER) || e.count != 1 || memcmp(&e.id, &alice_id, sizeof e.id) != 0)
        die("bob does not see alice lead");
    printf("bob: the leader is alice at %s (term %llu)\n",
           str(e.kv->entries[0].value, e.kv->entries[0].value_len, value, sizeof value), (unsigned long long)e.last);
    p2p_kv_list_free(e.kv);

    /* A queue: alice watches its length; bob pushes two tickets (a second
     * push of the same item changes nothing); alice pops both. */
    ALICE->qwatch = p2p_coord_watch_queue(ALICE->node, "lobby");
    if (ALICE->qwatch < 0) fail((p2p_result)ALICE->qwatch, "p2p_coord_watch_queue");
    while (ALICE->qlen != 0) frames(NULL, NULL);
    e = expect(BOB, p2p_coord_push(BOB->node, "lobby", "ann", 1, BYTES("ann's ticket"), session[1]),
               P2P_EVENT_COORD_PUSHED, "push");
    if (!(e.flags & P2P_EVENT_FLAG_COORD_APPLIED)) die("ann was not added");
    e = expect(BOB, p2p_coord_push(BOB->node, "lobby", "ben", 5, BYTES("ben's ticket"), 0), P2P_EVENT_COORD_PUSHED,
               "push");
    e = expect(BOB, p2p_coord_push(BOB->node, "lobby", "ann", 9, BYTES("again"), 0), P2P_EVENT_COORD_PUSHED, "push");
    if (e.flags & P2P_EVENT_FLAG_COORD_APPLIED) die("ann was added twice");
    printf("bob: pushed ann and ben (ann once)\n");
    while (ALICE->qlen != 2) frames(NULL, NULL);
    e = expect(ALICE, p2p_coord_pop(ALICE->node, "lobby", 2, 0), P2P_EVENT_COORD_POPPED, "pop");
    if (e.count != 2 || e.kv == NULL || e.kv->coord == NULL) die("the pop did not take 2 items");
    for (j = 0; j < e.count; j++) {
        const p2p_kv_entry *item = &e.kv->entries[j];
        const p2p_coord_entry *extra = &e.kv->coord[j];
        char name[32];
        printf("alice: popped %s (priority %d, pushed at revision %llu by %s): %s\n",
               str(item->key, item->key_len, name, sizeof name), (int)extra->priority,
               (unsigned long long)item->create_revision,
               memcmp(&extra->node, &bob_id, sizeof bob_id) == 0 ? "bob" : "someone else",
               str(item->value, item->value_len, value, sizeof value));
    }
    if (e.kv->coord[0].priority != 5 || (int64_t)e.kv->entries[1].version != 1) die("not in priority order");
    p2p_kv_list_free(e.kv);
    while (ALICE->qlen != 0) frames(NULL, NULL);
    e = expect(ALICE, p2p_coord_pop(ALICE->node, "lobby", 1, 0), P2P_EVENT_COORD_ENDED, "pop");
    if ((p2p_result)e.code != P2P_ERR_COORD_NOT_ENOUGH || e.count != 0) die("an empty queue popped");
    printf("alice: pop from the empty queue: %s\n", e.text);
    release(ALICE, ALICE->qwatch, "the queue watch");
    ALICE->qwatch = -1;

    /* The registry: alice registers a game server, bob finds it. */
    reg = p2p_coord_register(ALICE->node, "game", "eu-1", 3, 4, "region=eu, mode=ranked", BYTES("127.0.0.1:7777"),
                             session[0]);
    expect(ALICE, reg, P2P_EVENT_COORD_REGISTERED, "register");
    printf("alice: registered game/eu-1\n");
    e = expect(BOB, p2p_coord_query(BOB->node, "game", "region=eu", 1, 0), P2P_EVENT_COORD_INSTANCES, "query");
    if (e.count != 1 || e.kv == NULL) die("bob did not find eu-1");
    printf("bob: found %s at %s, load %u of %u, tags %s\n",
           str(e.kv->entries[0].key, e.kv->entries[0].key_len, text, sizeof text),
           str(e.kv->entries[0].value, e.kv->entries[0].value_len, value, sizeof value), e.kv->coord[0].load,
           e.kv->coord[0].capacity, e.kv->coord[0].tags);
    if (strcmp(e.kv->coord[0].tags, "mode=ranked,region=eu") != 0 ||
        memcmp(&e.kv->coord[0].node, &alice_id, sizeof alice_id) != 0)
        die("the instance's tags or node are wrong");
    p2p_kv_list_free(e.kv);
    /* Full now: a query for room finds nothing. */
    if (p2p_coord_update(ALICE->node, (uint64_t)reg, NULL, 0, 4) != P2P_OK) fail(P2P_ERR_INVALID_ARGUMENT, "update");
    e = expect(ALICE, reg, P2P_EVENT_COORD_UPDATED, "update");
    if ((p2p_result)e.code != P2P_OK) die(e.text);
    e = expect(BOB, p2p_coord_query(BOB->node, "game", NULL, 1, 0), P2P_EVENT_COORD_INSTANCES, "query");
    if (e.count != 0 || e.kv != NULL) die("a full instance has room");
    printf("bob: no game server with room once eu-1 is full\n");

    /* Everything is released; the sessions close. */
    release(ALICE, reg, "the registration");
    release(ALICE, campaign, "the campaign");
    release(ALICE, lock, "the lock");
    e = expect(BOB, p2p_coord_leader(BOB->node, "host", 0), P2P_EVENT_COORD_LEADER, "leader");
    if (!(e.flags & P2P_EVENT_FLAG_COORD_NO_LEADER) || e.kv != NULL) die("alice still leads");
    printf("bob: nobody leads host\n");
    for (i = 0; i < 2; i++) {
        id = p2p_kv_session_close(peers[i].node, session[i]);
        e = kv_answer(&peers[i], id, "p2p_kv_session_close");
        printf("%s: session closed\n", peers[i].name);
    }
    printf("coord: done\n");
    for (i = 0; i < 2; i++) p2p_node_free(peers[i].node);
    for (i = 0; i < SERVERS; i++) p2p_node_free(servers[i]);
    return 0;
}
