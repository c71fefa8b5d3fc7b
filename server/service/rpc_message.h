/* rpc_message: the bridge between protobuf-c messages and rpc_server, which knows only
 * bytes. cv_rpc_reply_message packs a unary call's answer and replies OK with it; when
 * the buffer cannot be allocated the call gets RESOURCE_EXHAUSTED instead.
 */
#ifndef CV_RPC_MESSAGE_H
#define CV_RPC_MESSAGE_H

#include <protobuf-c/protobuf-c.h>

#include "rpc_server.h"

void cv_rpc_reply_message(cv_rpc_call *call, const ProtobufCMessage *m);

#endif
