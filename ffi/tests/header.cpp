// Compiled as C++17 with warnings as errors by ffi/tests/c_abi.rs, linked
// against the library and run: the header works from C++, and the layouts
// C++ sees are the ones the library uses.
#include "p2pcore.h"

#include <cstdio>
#include <cstring>
#include <string>

static_assert(sizeof(p2p_node_id) == P2P_NODE_ID_LEN, "node IDs are 17 bytes");
static_assert(sizeof(p2p_addr) == 24, "p2p_addr is 24 bytes");
static_assert(sizeof(p2p_event) == (sizeof(void *) == 8 ? 336 : 328), "p2p_event layout");
static_assert(sizeof(p2p_kv_entry) == (sizeof(void *) == 8 ? 56 : 48), "p2p_kv_entry layout");
static_assert(sizeof(p2p_kv_list) == (sizeof(void *) == 8 ? 24 : 16), "p2p_kv_list layout");
static_assert(sizeof(p2p_coord_entry) == (sizeof(void *) == 8 ? 40 : 36), "p2p_coord_entry layout");
static_assert(sizeof(p2p_peer_info) == 120, "p2p_peer_info layout");
static_assert(sizeof(p2p_stats) == 144, "p2p_stats layout");

int main() {
    // Identities and IDs round-trip through their text form.
    uint8_t identity[P2P_IDENTITY_LEN];
    uint32_t len = sizeof identity;
    p2p_node_id id{}, parsed{};
    if (p2p_identity_generate(P2P_ROLE_SERVER, identity, &len) != P2P_OK || len != P2P_IDENTITY_LEN) return 1;
    if (p2p_identity_id(identity, len, &id) != P2P_OK) return 2;
    char text[P2P_NODE_ID_STR_LEN];
    uint32_t text_len = 4; // too small: says what is needed
    if (p2p_node_id_format(&id, text, &text_len) != P2P_ERR_BUFFER_TOO_SMALL || text_len != P2P_NODE_ID_STR_LEN) return 3;
    if (p2p_node_id_format(&id, text, &text_len) != P2P_OK || text[0] != 'S') return 4;
    if (p2p_node_id_parse(text, &parsed) != P2P_OK || std::memcmp(&id, &parsed, sizeof id) != 0) return 5;
    if (p2p_node_id_parse("not an id", &parsed) != P2P_ERR_INVALID_ARGUMENT) return 6;
    char message[256];
    p2p_last_error(message, sizeof message);
    std::printf("C++: %s parsed back; a bad ID says: %s\n", text, message);
    // A config from a blob of the wrong role is refused with a message.
    p2p_config cfg;
    p2p_config_default(&cfg);
    cfg.name = "cpp";
    cfg.identity = identity;
    cfg.identity_len = len;
    p2p_node *node = nullptr;
    if (p2p_node_create(&cfg, &node) != P2P_ERR_CONFIG || node != nullptr) return 7;
    p2p_last_error(message, sizeof message);
    if (std::string(message).find("role") == std::string::npos) return 8;
    return std::string(p2p_version()) == P2P_VERSION ? 0 : 9;
}
