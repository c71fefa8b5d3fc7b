/* rpc_message: the bridge between protobuf-c messages and rpc_server, which knows only
 * bytes. cv_rpc_reply_message packs a unary call's answer and replies OK with it; when
 * the buffer cannot be allocated the call gets RESOURCE_EXHAUSTED instead.
 *
 * Requests with text: cv_rpc_unpack_request unpacks with an allocator that remembers
 * each block's size, then checks every string field of the message, nested messages
 * and repeated fields included, with cv_utf8_check (base/utf8.h). Why the allocator:
 * proto3 strings arrive with an explicit length, but protobuf-c hands them over as
 * NUL-terminated `char *` and drops the length, so a NUL inside a string would
 * silently cut it for everyone who uses strlen. protobuf-c copies a string into a
 * block of exactly length + 1 bytes from the message's allocator (true of every
 * release since 0.15), so the block's size gives the length back without re-parsing
 * the wire; cv_rpc_pb_strlen reads it.
 *
 * Decision on NUL (U+0000): refused, like invalid UTF-8, with INVALID_ARGUMENT naming
 * the field as the proto spells it and the byte offset ("messages[1].content: ...
 * byte 7"), because the tokenizers, chat templates, stop strings and RAG prompts all
 * work on C strings. A text that passes the check has strlen() == its wire length.
 */
#ifndef CV_RPC_MESSAGE_H
#define CV_RPC_MESSAGE_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "rpc_server.h"

void cv_rpc_reply_message(cv_rpc_call *call, const ProtobufCMessage *m);

/* Unpacks a request of type desc with the sized allocator and checks its text; NULL
 * after answering INVALID_ARGUMENT ("malformed <Type>", or the field, the problem and
 * its byte offset). Free the message with cv_rpc_free_request. */
void *cv_rpc_unpack_request(const ProtobufCMessageDescriptor *desc, cv_rpc_call *call,
                            const uint8_t *data, size_t len);
void cv_rpc_free_request(ProtobufCMessage *m);

/* The allocator cv_rpc_unpack_request uses (for messages unpacked or freed elsewhere). */
extern ProtobufCAllocator cv_rpc_pb_allocator;

/* The length a string of a message unpacked with cv_rpc_pb_allocator had on the wire
 * (0 for NULL and for an absent field, which points at protobuf-c's empty string). */
size_t cv_rpc_pb_strlen(const char *s);

/* 0 when every string field of m (recursively) is valid UTF-8 without NUL; otherwise
 * -1 with "<field path>: <problem> at byte <offset>" in msg. m must come from
 * cv_rpc_pb_allocator. */
int cv_rpc_check_text(const ProtobufCMessage *m, char *msg, size_t cap);

#endif
