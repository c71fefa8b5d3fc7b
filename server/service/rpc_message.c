#include "rpc_message.h"

#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text_field.h"

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

/* ---- the sized allocator: each block is preceded by its requested size ---- */

typedef union block_head {
    max_align_t align; /* keeps the block aligned as malloc's */
    size_t size;
} block_head;

static void *sized_alloc(void *data, size_t size) {
    (void)data;
    if (size > SIZE_MAX - sizeof(block_head)) return NULL;
    block_head *h = malloc(sizeof *h + size);
    if (!h) return NULL;
    h->size = size;
    return h + 1;
}

static void sized_free(void *data, void *p) {
    (void)data;
    if (p) free((block_head *)p - 1);
}

ProtobufCAllocator cv_rpc_pb_allocator = {sized_alloc, sized_free, NULL};

size_t cv_rpc_pb_strlen(const char *s) {
    if (!s || s == protobuf_c_empty_string) return 0;
    size_t block = ((const block_head *)s - 1)->size;
    /* protobuf-c allocates length + 1 and writes the terminator last; anything else
     * (never seen) falls back to the C string. */
    if (block == 0 || s[block - 1] != 0) return strlen(s);
    return block - 1;
}

/* ---- text check over the descriptor ---- */

static int check_string(const char *s, const char *path, char *msg, size_t cap) {
    return cv_text_field_check(s, cv_rpc_pb_strlen(s), path, msg, cap);
}

#define PATH_MAX_LEN 256

static int check_message(const ProtobufCMessage *m, const char *prefix, char *msg, size_t cap) {
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        const char *base = (const char *)m;
        const void *member = base + f->offset;
        /* A oneof member is set only when the case says so. */
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(const void *)(base + f->quantifier_offset) != f->id)
            continue;
        size_t n = 1;
        const void *const *items = member;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)(const void *)(base + f->quantifier_offset);
            items = *(const void *const *const *)member;
        }
        for (size_t k = 0; k < n; k++) {
            const void *v = items[k];
            if (!v) continue;
            char path[PATH_MAX_LEN];
            if (f->label == PROTOBUF_C_LABEL_REPEATED)
                snprintf(path, sizeof path, "%s%s[%zu]", prefix, f->name, k);
            else
                snprintf(path, sizeof path, "%s%s", prefix, f->name);
            if (f->type == PROTOBUF_C_TYPE_STRING) {
                if (check_string(v, path, msg, cap)) return -1;
            } else {
                char sub[PATH_MAX_LEN + 1];
                snprintf(sub, sizeof sub, "%s.", path);
                if (check_message(v, sub, msg, cap)) return -1;
            }
        }
    }
    return 0;
}

int cv_rpc_check_text(const ProtobufCMessage *m, char *msg, size_t cap) { return check_message(m, "", msg, cap); }

void *cv_rpc_unpack_request(const ProtobufCMessageDescriptor *desc, cv_rpc_call *call,
                            const uint8_t *data, size_t len) {
    char msg[PATH_MAX_LEN + 100];
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, &cv_rpc_pb_allocator, len, data);
    if (!m) {
        snprintf(msg, sizeof msg, "malformed %s", desc->short_name);
        cv_rpc_reply(call, CV_RPC_INVALID_ARGUMENT, msg, NULL, 0);
        return NULL;
    }
    if (cv_rpc_check_text(m, msg, sizeof msg)) {
        cv_rpc_reply(call, CV_RPC_INVALID_ARGUMENT, msg, NULL, 0);
        cv_rpc_free_request(m);
        return NULL;
    }
    return m;
}

void cv_rpc_free_request(ProtobufCMessage *m) {
    if (m) protobuf_c_message_free_unpacked(m, &cv_rpc_pb_allocator);
}
