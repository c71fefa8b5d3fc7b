/* slot: one loaded model version, everything a request needs to run on it.
 *
 * cv_slot_load opens and validates the GGUF, builds its tokenizer, the model's runner
 * (its backends and tensor-parallel shards: tp.h) and an engine, in that order; any failure undoes the earlier steps and names
 * the file. With a draft model (speculative decoding: engine.h) it opens that file too,
 * checks that its vocabulary is the target's token for token (the error names the
 * first difference) and loads it on the same device and threads, unsharded. The slot owns all of them. Several slots may live at once (blue/green).
 */
#ifndef CV_SLOT_H
#define CV_SLOT_H

#include "chat_format.h"
#include "engine.h"
#include "gguf.h"
#include "model.h"
#include "stats.h"
#include "tokenizer.h"
#include "tp.h"

typedef struct cv_slot_options {
    int threads;                 /* <= 0: one per core; split between the tp ranks */
    cv_device device;            /* CV_DEVICE_CPU or CV_DEVICE_CUDA */
    int tp;                      /* tensor-parallel ranks (0: 1) */
    cv_engine_config engine;     /* its draft is set by the slot */
    char draft_model[1024];      /* GGUF path of a draft model; "": none */
} cv_slot_options;

typedef struct cv_slot {
    char version[128];
    char path[1024];
    char name[128];              /* general.name, or the file name */
    cv_chat_format *chat;        /* the model's chat format (chat_format.h); NULL: none */
    char chat_error[512];        /* why chat is NULL, or why the file's template was replaced */
    cv_gguf *gguf;
    cv_tok *tok;
    cv_tp *tp;
    cv_engine *engine;
    cv_gguf *draft_gguf;         /* the draft model, when there is one */
    cv_tp *draft_tp;
    cv_stats *stats;             /* requests served by this version (borrowed) */
} cv_slot;

/* stats (may be NULL) is borrowed: it must outlive the slot. */
cv_status cv_slot_load(const char *path, const char *version, const cv_slot_options *opt,
                       cv_stats *stats, cv_slot **out, cv_error *err);
/* A model file's name without directories and the .gguf extension: the version when none is given. */
void cv_slot_default_version(const char *path, char *out, size_t cap);
/* Stops the engine: requests still queued or running end as cancelled. NULL is fine. */
void cv_slot_stop(cv_slot *s);
/* Stops the engine if still running and frees everything. */
void cv_slot_free(cv_slot *s);

#endif
