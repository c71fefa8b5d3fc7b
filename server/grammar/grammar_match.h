/* grammar_match: which tokens a grammar allows next, for constrained sampling.
 *
 * cv_gvocab is a tokenizer's vocabulary as a byte trie (built once per model): each
 * token is the bytes it produces; tokens without bytes (control tokens) are allowed
 * only where a token terminal of the grammar names them (grammar.h), and the end
 * tokens exactly when the text so far is a complete sentence of the grammar. A token
 * terminal matches its token alone: where a stack's top names token t, t advances by
 * that terminal (not by its bytes).
 *
 * cv_gmatch follows one sequence. Its state is a set of pushdown stacks (the grammar
 * is nondeterministic: every stack is a way the text so far can continue), hash-consed
 * into a numbered configuration. Configurations form a lazily built DFA over bytes:
 * each one's 256 transitions are computed on first use and kept, so walking the token
 * trie for a mask costs one table lookup per trie edge, a token's bytes need not align
 * with grammar symbols (a token may close a string, add a comma and open a key), and a
 * token that ends inside a UTF-8 character leaves the stacks in the middle of that
 * character's byte sequence. The mask of each configuration is computed once and
 * cached: inside a JSON string the configuration repeats, so most steps reuse a mask;
 * cv_gdfa_precompute fills the cache ahead for the configurations a grammar reaches.
 *
 * Bounds (the grammar is untrusted): at most CV_GMATCH_MAX_STACKS stacks per
 * configuration (an ambiguous grammar that would exceed it fails the sequence with
 * CV_ERANGE), and CV_GMATCH_MAX_NODES stack nodes per matcher.
 *
 * A matcher belongs to one sequence. The vocabulary is read-only once built and must
 * outlive the automata built over it.
 */
#ifndef CV_GRAMMAR_MATCH_H
#define CV_GRAMMAR_MATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"
#include "grammar.h"

#define CV_GMATCH_MAX_STACKS 1024
#define CV_GMATCH_MAX_NODES (1 << 22)

typedef struct cv_gvocab cv_gvocab;

/* pieces[i][0..lens[i]) are token i's bytes; is_end[i] marks end-of-generation tokens;
 * texts[i][0..text_lens[i]) is the text that names a token without bytes (a control
 * token as the template writes it, [TOOL_CALLS]) in a grammar's <TEXT> terminal; texts
 * may be NULL (then such a terminal names tokens with bytes only). */
cv_status cv_gvocab_new(int32_t n_vocab, const char *const *pieces, const size_t *lens,
                        const uint8_t *is_end, const char *const *texts, const size_t *text_lens,
                        cv_gvocab **out, cv_error *err);
void cv_gvocab_free(cv_gvocab *v);
int32_t cv_gvocab_n_vocab(const cv_gvocab *v);

/* The automaton of one grammar over one vocabulary: stack nodes, configurations, their
 * transitions and masks, filled in as matchers need them and kept for every later
 * matcher of the same grammar (the engine keeps one per distinct grammar text, so a
 * schema used again costs neither compilation nor mask walks). Reference-counted;
 * matchers that share one must run on one thread at a time (the engine's). */
typedef struct cv_gdfa cv_gdfa;

/* Takes ownership of g (freed with the last reference, also on failure). CV_EINVAL
 * when a token terminal names no token of v, several, or an end token. */
cv_status cv_gdfa_new(cv_grammar *g, const cv_gvocab *v, cv_gdfa **out, cv_error *err);
cv_gdfa *cv_gdfa_ref(cv_gdfa *d);
void cv_gdfa_unref(cv_gdfa *d);
/* Computes the masks of the configurations reachable from the start, likeliest first
 * (each mask's trie walk also finds the configurations its tokens lead to), until all
 * are explored or max_masks are kept or max_seconds have passed: at compile time, off
 * the engine thread, so that no decode step pays a first mask (inside a JSON string
 * one walks most of the vocabulary: ~5 ms on 150k tokens on a quiet core, tens under
 * load). A mask whose walk visited fewer than cheap_nodes trie nodes is not kept (a
 * step computes it in microseconds; the budget's memory goes to the expensive ones)
 * and does not count towards max_masks. Before d is shared. */
cv_status cv_gdfa_precompute(cv_gdfa *d, int32_t max_masks, double max_seconds, size_t cheap_nodes,
                             cv_error *err);
/* The engine's budget for it: at most this many masks kept (20 MB on a 150k
 * vocabulary), in this many seconds, walks under this many trie nodes (a few tens of
 * microseconds) left to the steps. */
#define CV_GDFA_PRECOMPUTE_MASKS 1024
#define CV_GDFA_PRECOMPUTE_SECONDS 2.0
#define CV_GDFA_PRECOMPUTE_CHEAP 4096
/* Memory its tables hold, readable from any thread (for a cache's size bound). */
size_t cv_gdfa_bytes(const cv_gdfa *d);

typedef struct cv_gmatch cv_gmatch;

/* A matcher at the start of the text; it holds a reference to d. */
cv_status cv_gmatch_start(cv_gdfa *d, cv_gmatch **out, cv_error *err);
void cv_gmatch_free(cv_gmatch *m);

/* The tokens allowed next: n_vocab bits (token i is bit i & 63 of word i >> 6). Valid
 * until the matcher is freed. After an end token nothing is allowed. */
cv_status cv_gmatch_mask(cv_gmatch *m, const uint64_t **mask, cv_error *err);

/* Advances over a token. CV_EINVAL when the grammar does not allow it (the mask
 * would have excluded it); the state is then unchanged. */
cv_status cv_gmatch_accept_token(cv_gmatch *m, int32_t token, cv_error *err);

/* Advances over raw bytes (tests, and text forced into the output). Same errors. */
cv_status cv_gmatch_accept_bytes(cv_gmatch *m, const char *s, size_t n, cv_error *err);

/* The text so far is a complete sentence (an end token is allowed). */
bool cv_gmatch_accepting(const cv_gmatch *m);
/* An end token was accepted. */
bool cv_gmatch_ended(const cv_gmatch *m);

/* Counters for tests and the benchmark: masks asked by this matcher; masks computed
 * (cache misses and precomputed), of them precomputed, configurations and stack nodes
 * of its automaton. */
typedef struct cv_gmatch_stats {
    uint64_t masks_computed, masks_asked, configs, nodes, masks_precomputed;
} cv_gmatch_stats;
void cv_gmatch_get_stats(const cv_gmatch *m, cv_gmatch_stats *st);

#endif
