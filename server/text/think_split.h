/* think_split: a reasoning model's output cut into reasoning and answer, as it streams.
 *
 * DeepSeek-R1 (and its Qwen / Llama distills), Qwen3 in thinking mode and QwQ write
 * their reasoning between "<think>" and "</think>", then the answer; DeepSeek's API
 * returns the first part as reasoning_content. The splitter takes the text in pieces of
 * any size and hands each byte to reasoning or content; the markers themselves go to
 * neither, nor does the whitespace right after "</think>" (the templates' "\n\n"). A
 * piece that could be the start of a marker is held back until the next piece decides
 * (at most 7 bytes); cv_think_flush releases it at the end. Markers cut only between
 * complete characters, so both outputs stay valid UTF-8 when the input is.
 *
 * starts_inside: the prompt already opened the block (R1's template ends the generation
 * prompt with "<think>\n"): text is reasoning until "</think>".
 */
#ifndef CV_THINK_SPLIT_H
#define CV_THINK_SPLIT_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

typedef void (*cv_think_emit)(void *ctx, int reasoning, const char *text, size_t len);

typedef struct cv_think_split {
    int inside;        /* in a think block */
    int after_close;   /* whitespace right after "</think>" is dropped */
    char hold[8];      /* a possible marker start */
    size_t n_hold;
} cv_think_split;

void cv_think_init(cv_think_split *s, int starts_inside);
void cv_think_feed(cv_think_split *s, const char *text, size_t len, cv_think_emit emit, void *ctx);
void cv_think_flush(cv_think_split *s, cv_think_emit emit, void *ctx);

/* Whether a prompt's last tokens open a think block ("<think>" then only whitespace). */
int cv_think_prompt_opens(const cv_tok *tok, const int32_t *ids, size_t n);

#endif
