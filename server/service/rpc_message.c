#include "rpc_message.h"

#include <stdlib.h>

void cv_rpc_reply_message(cv_rpc_call *call, const ProtobufCMessage *m) {
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        cv_rpc_reply(call, CV_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        return;
    }
    protobuf_c_message_pack(m, buf);
    cv_rpc_reply(call, CV_RPC_OK, NULL, buf, n);
    free(buf);
}
