/* Tokenizer loading (GGUF tokenizer.* metadata), special-token matching,
 * encode dispatch, decoding and the streaming decoder. The segmenters live in
 * tok_spm.c and tok_bpe.c, the pre-tokenizers in tok_pretok.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "utf8.h"

/* Longest text cv_tok_encode accepts: symbol indices are 32-bit. */
#define TOK_MAX_INPUT ((size_t)1 << 28)

static uint64_t hash_bytes(const char *s, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

int32_t tok_lookup(const cv_tok *t, const char *s, size_t len) {
    for (uint64_t i = hash_bytes(s, len) & t->map_mask;; i = (i + 1) & t->map_mask) {
        int32_t id = t->map[i];
        if (id < 0) return -1;
        if (t->text_len[id] == len && memcmp(t->text + t->text_off[id], s, len) == 0) return id;
    }
}

static uint64_t pow2_at_least(uint64_t n) {
    uint64_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

void cv_tok_free(cv_tok *t) {
    if (!t) return;
    free(t->text);
    free(t->text_off);
    free(t->text_len);
    free(t->piece);
    free(t->piece_off);
    free(t->piece_len);
    free(t->score);
    free(t->type);
    free(t->map);
    free(t->merges);
    free(t->special_lens);
    free(t);
}

/* ---- loading ---- */

static cv_status load_texts(cv_tok *t, const cv_gguf_arr *tokens, cv_error *err) {
    uint64_t total = 0;
    for (int32_t i = 0; i < t->n; i++) {
        cv_str s = cv_gguf_arr_str(tokens, (uint64_t)i);
        if (s.len > UINT32_MAX)
            return cv_errorf(err, CV_ERANGE, "tokenizer.ggml.tokens[%d]: length %llu exceeds %u",
                             i, (unsigned long long)s.len, UINT32_MAX);
        total += s.len + 1;
    }
    t->text = malloc(total ? total : 1);
    t->piece = malloc(total ? total : 1);
    t->text_off = malloc((size_t)t->n * sizeof *t->text_off);
    t->text_len = malloc((size_t)t->n * sizeof *t->text_len);
    t->piece_off = malloc((size_t)t->n * sizeof *t->piece_off);
    t->piece_len = malloc((size_t)t->n * sizeof *t->piece_len);
    t->map_mask = pow2_at_least(2 * (uint64_t)t->n) - 1;
    t->map = malloc((t->map_mask + 1) * sizeof *t->map);
    if (!t->text || !t->piece || !t->text_off || !t->text_len || !t->piece_off ||
        !t->piece_len || !t->map)
        return cv_errorf(err, CV_ENOMEM, "tokenizer: %d tokens, %llu bytes of text: out of memory",
                         t->n, (unsigned long long)total);
    memset(t->map, 0xFF, (t->map_mask + 1) * sizeof *t->map);
    uint64_t off = 0;
    for (int32_t i = 0; i < t->n; i++) {
        cv_str s = cv_gguf_arr_str(tokens, (uint64_t)i);
        if (s.len) memcpy(t->text + off, s.ptr, s.len);
        t->text[off + s.len] = 0;
        t->text_off[i] = off;
        t->text_len[i] = (uint32_t)s.len;
        off += s.len + 1;
        /* A repeated text maps to its last id, as in llama.cpp. */
        uint64_t h = hash_bytes(s.ptr, s.len) & t->map_mask;
        for (;; h = (h + 1) & t->map_mask) {
            int32_t other = t->map[h];
            if (other < 0 || (t->text_len[other] == s.len &&
                              memcmp(t->text + t->text_off[other], s.ptr, s.len) == 0)) {
                t->map[h] = i;
                break;
            }
        }
    }
    return CV_OK;
}

static cv_status load_scores_types(cv_tok *t, const cv_gguf *g, cv_error *err) {
    t->score = calloc((size_t)t->n, sizeof *t->score);
    t->type = malloc((size_t)t->n);
    if (!t->score || !t->type) return cv_errorf(err, CV_ENOMEM, "tokenizer scores: out of memory");
    memset(t->type, CV_TOK_TYPE_NORMAL, (size_t)t->n);
    cv_gguf_arr a;
    if (cv_gguf_get_arr(g, "tokenizer.ggml.scores", &a)) {
        if (a.n != (uint64_t)t->n)
            return cv_errorf(err, CV_EFORMAT, "tokenizer.ggml.scores has %llu entries, tokens %d",
                             (unsigned long long)a.n, t->n);
        for (int32_t i = 0; i < t->n; i++) t->score[i] = (float)cv_gguf_arr_f64(&a, (uint64_t)i);
    }
    if (cv_gguf_get_arr(g, "tokenizer.ggml.token_type", &a)) {
        if (a.n != (uint64_t)t->n)
            return cv_errorf(err, CV_EFORMAT,
                             "tokenizer.ggml.token_type has %llu entries, tokens %d",
                             (unsigned long long)a.n, t->n);
        for (int32_t i = 0; i < t->n; i++) {
            int64_t ty = cv_gguf_arr_i64(&a, (uint64_t)i);
            if (ty < CV_TOK_TYPE_UNDEFINED || ty > CV_TOK_TYPE_BYTE)
                return cv_errorf(err, CV_EFORMAT,
                                 "tokenizer.ggml.token_type[%d] = %lld, valid types are 0..6", i,
                                 (long long)ty);
            t->type[i] = (uint8_t)ty;
        }
    }
    return CV_OK;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The byte an SPM "<0xNN>" token stands for, or -1. */
static int spm_byte_value(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* What a token decodes to: SPM pieces with U+2581 turned back into spaces, byte
 * tokens as their byte, byte-level BPE text un-aliased, user-defined tokens as
 * written; control, unknown, unused and undefined tokens decode to nothing (their
 * text with CV_TOK_RENDER_SPECIAL). */
static void build_pieces(cv_tok *t) {
    uint64_t off = 0;
    t->max_piece = 0;
    for (int32_t i = 0; i < t->n; i++) {
        const char *s = t->text + t->text_off[i];
        size_t len = t->text_len[i], w = 0;
        char *out = t->piece + off;
        uint8_t ty = t->type[i];
        int byte = t->kind == CV_TOK_SPM && ty == CV_TOK_TYPE_BYTE ? spm_byte_value(s, len) : -1;
        if (byte >= 0) {
            out[w++] = (char)byte;
        } else if (ty == CV_TOK_TYPE_USER_DEFINED) {
            memcpy(out, s, len);
            w = len;
        } else if (ty == CV_TOK_TYPE_NORMAL || ty == CV_TOK_TYPE_BYTE) {
            if (t->kind == CV_TOK_BPE) {
                w = tok_bpe_unalias(s, len, out);
            } else {
                for (size_t k = 0; k < len; k++) {
                    if (k + 3 <= len && memcmp(s + k, "\xE2\x96\x81", 3) == 0) {
                        out[w++] = ' ';
                        k += 2;
                    } else {
                        out[w++] = s[k];
                    }
                }
            }
        }
        t->piece_off[i] = off;
        t->piece_len[i] = (uint32_t)w;
        off += w;
        if (len > t->max_piece) t->max_piece = len;
    }
}

static void find_byte_tokens(cv_tok *t) {
    for (int b = 0; b < 256; b++) {
        char buf[8];
        int32_t id;
        if (t->kind == CV_TOK_SPM) {
            static const char hex[] = "0123456789ABCDEF";
            const char s[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
            id = tok_lookup(t, s, 6);
            if (id < 0 && b < 0x80) {
                buf[0] = (char)b;
                id = tok_lookup(t, buf, 1);
            }
        } else {
            int l = cv_utf8_encode(tok_bpe_byte_to_cp((uint8_t)b), buf);
            id = tok_lookup(t, buf, (size_t)l);
        }
        t->byte_tok[b] = id;
    }
}

static cv_status load_merges(cv_tok *t, const cv_gguf *g, cv_error *err) {
    cv_gguf_arr a;
    if (!cv_gguf_get_arr(g, "tokenizer.ggml.merges", &a) || a.n == 0) return CV_OK;
    if (a.type != CV_GGUF_STRING)
        return cv_errorf(err, CV_EFORMAT, "tokenizer.ggml.merges: element type %d, expected string",
                         (int)a.type);
    if (a.n > INT32_MAX)
        return cv_errorf(err, CV_ERANGE, "tokenizer.ggml.merges: %llu entries exceed %d",
                         (unsigned long long)a.n, INT32_MAX);
    t->merge_mask = pow2_at_least(2 * a.n) - 1;
    t->merges = malloc((t->merge_mask + 1) * sizeof *t->merges);
    char *cat = malloc(t->max_piece * 2 + 1);
    if (!t->merges || !cat) {
        free(cat);
        return cv_errorf(err, CV_ENOMEM, "tokenizer.ggml.merges: %llu entries: out of memory",
                         (unsigned long long)a.n);
    }
    for (uint64_t i = 0; i <= t->merge_mask; i++) t->merges[i].rank = -1;
    for (uint64_t r = 0; r < a.n; r++) {
        cv_str m = cv_gguf_arr_str(&a, r);
        /* "left right"; the split is the first space after the first byte. */
        const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', m.len - 1) : NULL;
        if (!sp) {
            free(cat);
            return cv_errorf(err, CV_EFORMAT, "tokenizer.ggml.merges[%llu] = '%.*s' has no space",
                             (unsigned long long)r, (int)(m.len > 64 ? 64 : m.len), m.ptr);
        }
        size_t ll = (size_t)(sp - m.ptr), rl = m.len - ll - 1;
        int32_t left = tok_lookup(t, m.ptr, ll), right = tok_lookup(t, sp + 1, rl);
        /* A merge whose halves or result are not tokens can never apply to token
         * symbols: skip it (llama.cpp keeps it by text, to the same effect). */
        if (left < 0 || right < 0 || ll + rl > 2 * t->max_piece) continue;
        memcpy(cat, m.ptr, ll);
        memcpy(cat + ll, sp + 1, rl);
        int32_t result = tok_lookup(t, cat, ll + rl);
        if (result < 0) continue;
        uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
        uint64_t h = key * 0x9E3779B97F4A7C15ull;
        for (uint64_t i = (h >> 17) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
            tok_merge *e = &t->merges[i];
            if (e->rank >= 0 && e->key != key) continue;
            if (e->rank < 0) { /* the first (lowest) rank of a repeated pair wins */
                e->key = key;
                e->rank = (int32_t)r;
                e->result = result;
            }
            break;
        }
    }
    free(cat);
    return CV_OK;
}

static int is_special_type(uint8_t ty) {
    return ty == CV_TOK_TYPE_CONTROL || ty == CV_TOK_TYPE_UNKNOWN || ty == CV_TOK_TYPE_USER_DEFINED;
}

static int cmp_desc_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static cv_status index_specials(cv_tok *t, cv_error *err) {
    size_t n = 0;
    for (int32_t i = 0; i < t->n; i++)
        if (is_special_type(t->type[i]) && t->text_len[i] > 0) n++;
    if (n == 0) return CV_OK;
    t->special_lens = malloc(n * sizeof *t->special_lens);
    if (!t->special_lens) return cv_errorf(err, CV_ENOMEM, "special tokens: out of memory");
    n = 0;
    for (int32_t i = 0; i < t->n; i++) {
        if (!is_special_type(t->type[i]) || t->text_len[i] == 0) continue;
        uint8_t first = (uint8_t)t->text[t->text_off[i]];
        t->special_first[first >> 3] |= (uint8_t)(1u << (first & 7));
        t->special_lens[n++] = t->text_len[i];
    }
    qsort(t->special_lens, n, sizeof *t->special_lens, cmp_desc_u32);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || t->special_lens[u - 1] != t->special_lens[i]) t->special_lens[u++] = t->special_lens[i];
    t->n_special_lens = u;
    return CV_OK;
}

/* def applies only when the key is absent: a present "no such token" stays -1. */
static int32_t get_id(const cv_tok *t, const cv_gguf *g, const char *key, int32_t def) {
    int64_t v = cv_gguf_find_key(g, key) < 0 ? def : cv_gguf_get_token_id(g, key);
    return v >= 0 && v < t->n ? (int32_t)v : -1;
}

static void add_eog(cv_tok *t, int32_t id) {
    if (id < 0 || t->n_eog >= TOK_MAX_EOG) return;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return;
    t->eog[t->n_eog++] = id;
}

/* Turn-ending tokens of the common chat formats, as llama.cpp recognises them. */
static const char *const k_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>", "_<EOT>", ("<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"),
};

/* The tokenizer.ggml.pre values llama.cpp maps to each supported rule set, and
 * what it sets with them: ignore_merges (a word that is a token as a whole is
 * taken as is) and BOS by default (tokenizer.ggml.add_bos_token overrides it). */
enum { PRE_IGNORE_MERGES = 1, PRE_ADD_BOS = 2 };
static const struct pre_name {
    const char *name;
    tok_pre pre;
    unsigned flags;
} k_pre_names[] = {
    {"gpt-2", TOK_PRE_GPT2, 0}, {"default", TOK_PRE_GPT2, 0}, {"gpt2", TOK_PRE_GPT2, 0},
    {"llama3", TOK_PRE_LLAMA3, PRE_IGNORE_MERGES | PRE_ADD_BOS},
    {"llama-v3", TOK_PRE_LLAMA3, PRE_IGNORE_MERGES | PRE_ADD_BOS},
    {"llama-bpe", TOK_PRE_LLAMA3, PRE_IGNORE_MERGES | PRE_ADD_BOS},
    {"falcon3", TOK_PRE_LLAMA3, PRE_IGNORE_MERGES | PRE_ADD_BOS},
    {"falcon-h1", TOK_PRE_LLAMA3, PRE_IGNORE_MERGES | PRE_ADD_BOS},
    {"pixtral", TOK_PRE_LLAMA3, PRE_IGNORE_MERGES | PRE_ADD_BOS},
    {"midm-2.0", TOK_PRE_LLAMA3, PRE_IGNORE_MERGES | PRE_ADD_BOS},
    {"lfm2", TOK_PRE_LLAMA3, PRE_IGNORE_MERGES | PRE_ADD_BOS},
    {"dbrx", TOK_PRE_LLAMA3, 0}, {"smaug-bpe", TOK_PRE_LLAMA3, 0},
    {"qwen2", TOK_PRE_QWEN2, 0}, {"deepseek-r1-qwen", TOK_PRE_QWEN2, 0},
    {"megrez", TOK_PRE_QWEN2, 0}, {"stablelm2", TOK_PRE_QWEN2, 0},
    {"qwen35", TOK_PRE_QWEN35, 0},
    {"deepseek-llm", TOK_PRE_DEEPSEEK_LLM, 0},
    {"deepseek-coder", TOK_PRE_DEEPSEEK_CODER, 0},
    {"deepseek-v3", TOK_PRE_DEEPSEEK_V3, 0},
    {"falcon", TOK_PRE_FALCON, 0},
    {"smollm", TOK_PRE_SMOLLM, 0}, {"starcoder", TOK_PRE_SMOLLM, 0},
    {"refact", TOK_PRE_SMOLLM, 0}, {"command-r", TOK_PRE_SMOLLM, 0},
    {"codeshell", TOK_PRE_SMOLLM, 0}, {"exaone", TOK_PRE_SMOLLM, 0},
    {"minerva-7b", TOK_PRE_SMOLLM, 0},
    {"tekken", TOK_PRE_TEKKEN, PRE_IGNORE_MERGES | PRE_ADD_BOS},
};

static cv_status parse_pre(cv_tok *t, const cv_gguf *g, unsigned *flags, cv_error *err) {
    const size_t n_names = sizeof k_pre_names / sizeof k_pre_names[0];
    cv_str pre = cv_gguf_get_str(g, "tokenizer.ggml.pre");
    *flags = 0;
    if (!pre.ptr) { /* older conversions: llama.cpp falls back to GPT-2's rules too */
        t->pre = TOK_PRE_GPT2;
        t->pre_name = k_pre_names[0].name;
        return CV_OK;
    }
    for (size_t i = 0; i < n_names; i++) {
        if (strlen(k_pre_names[i].name) == pre.len && memcmp(k_pre_names[i].name, pre.ptr, pre.len) == 0) {
            t->pre = k_pre_names[i].pre;
            t->pre_name = k_pre_names[i].name;
            *flags = k_pre_names[i].flags;
            return CV_OK;
        }
    }
    char names[1024];
    size_t w = 0;
    for (size_t i = 0; i < n_names && w < sizeof names; i++)
        w += (size_t)snprintf(names + w, sizeof names - w, "%s%s", i ? ", " : "", k_pre_names[i].name);
    return cv_errorf(err, CV_EUNSUPPORTED, "tokenizer.ggml.pre = '%.*s' is not supported (supported: %s)",
                     (int)(pre.len > 64 ? 64 : pre.len), pre.ptr, names);
}

cv_status cv_tok_load(const cv_gguf *g, cv_tok **out, cv_error *err) {
    *out = NULL;
    cv_str model = cv_gguf_get_str(g, "tokenizer.ggml.model");
    if (!model.ptr) return cv_errorf(err, CV_ENOTFOUND, "no tokenizer.ggml.model key: the file has no tokenizer");
    cv_tok *t = calloc(1, sizeof *t);
    if (!t) return cv_errorf(err, CV_ENOMEM, "tokenizer: out of memory");
    cv_status st;
    unsigned pre_flags = 0;
    t->pre_name = "";
    if (model.len == 5 && memcmp(model.ptr, "llama", 5) == 0) {
        t->kind = CV_TOK_SPM;
    } else if (model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0) {
        t->kind = CV_TOK_BPE;
        if ((st = parse_pre(t, g, &pre_flags, err)) != CV_OK) goto fail;
    } else {
        st = cv_errorf(err, CV_EUNSUPPORTED,
                       "tokenizer.ggml.model = '%.*s' is not supported (supported: llama, gpt2)",
                       (int)(model.len > 64 ? 64 : model.len), model.ptr);
        goto fail;
    }
    cv_gguf_arr tokens;
    if (!cv_gguf_get_arr(g, "tokenizer.ggml.tokens", &tokens) || tokens.type != CV_GGUF_STRING) {
        st = cv_errorf(err, CV_ENOTFOUND, "no tokenizer.ggml.tokens string array");
        goto fail;
    }
    if (tokens.n == 0 || tokens.n > INT32_MAX) {
        st = cv_errorf(err, CV_ERANGE, "tokenizer.ggml.tokens has %llu entries, allowed 1..%d",
                       (unsigned long long)tokens.n, INT32_MAX);
        goto fail;
    }
    t->n = (int32_t)tokens.n;
    if ((st = load_texts(t, &tokens, err)) != CV_OK) goto fail;
    if ((st = load_scores_types(t, g, err)) != CV_OK) goto fail;
    build_pieces(t);
    find_byte_tokens(t);
    if (t->kind == CV_TOK_BPE && (st = load_merges(t, g, err)) != CV_OK) goto fail;
    if ((st = index_specials(t, err)) != CV_OK) goto fail;

    /* SentencePiece's conventional ids when the file does not name them. */
    int spm = t->kind == CV_TOK_SPM;
    t->bos = get_id(t, g, "tokenizer.ggml.bos_token_id", spm ? 1 : -1);
    t->eos = get_id(t, g, "tokenizer.ggml.eos_token_id", spm ? 2 : -1);
    t->unk = get_id(t, g, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1);
    t->add_bos = cv_gguf_get_bool(g, "tokenizer.ggml.add_bos_token",
                                  spm || (pre_flags & PRE_ADD_BOS)) && t->bos >= 0;
    t->add_eos = cv_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", 0) && t->eos >= 0;
    t->add_space_prefix = cv_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", spm);
    t->ignore_merges = (pre_flags & PRE_IGNORE_MERGES) != 0;
    add_eog(t, t->eos);
    add_eog(t, get_id(t, g, "tokenizer.ggml.eot_token_id", -1));
    add_eog(t, get_id(t, g, "tokenizer.ggml.eom_token_id", -1));
    for (size_t i = 0; i < sizeof k_eog_texts / sizeof k_eog_texts[0]; i++)
        add_eog(t, tok_lookup(t, k_eog_texts[i], strlen(k_eog_texts[i])));
    *out = t;
    return CV_OK;
fail:
    cv_tok_free(t);
    return st;
}

/* ---- queries ---- */

cv_tok_kind cv_tok_get_kind(const cv_tok *t) { return t->kind; }
const char *cv_tok_kind_name(const cv_tok *t) { return t->kind == CV_TOK_SPM ? "spm" : "bpe"; }

const char *cv_tok_pre_name(const cv_tok *t) { return t->pre_name; }

int32_t cv_tok_n_vocab(const cv_tok *t) { return t->n; }
int32_t cv_tok_bos(const cv_tok *t) { return t->bos; }
int32_t cv_tok_eos(const cv_tok *t) { return t->eos; }
int cv_tok_adds_bos(const cv_tok *t) { return t->add_bos; }

int cv_tok_is_eog(const cv_tok *t, int32_t id) {
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return 1;
    return 0;
}

cv_tok_type cv_tok_token_type(const cv_tok *t, int32_t id) {
    return id >= 0 && id < t->n ? (cv_tok_type)t->type[id] : CV_TOK_TYPE_UNDEFINED;
}

const char *cv_tok_token_text(const cv_tok *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n) {
        *len = 0;
        return NULL;
    }
    *len = t->text_len[id];
    return t->text + t->text_off[id];
}

int32_t cv_tok_find(const cv_tok *t, const char *text, size_t len) { return tok_lookup(t, text, len); }

/* ---- encoding ---- */

/* The special token starting at p (leftmost-longest), or -1. Control and unknown
 * tokens match only when their whole text fits in ctl_max bytes (0: never). */
static int32_t match_special(const cv_tok *t, const char *p, size_t rem, size_t ctl_max,
                             size_t *mlen) {
    uint8_t c = (uint8_t)p[0];
    if (!(t->special_first[c >> 3] & (1u << (c & 7)))) return -1;
    for (size_t k = 0; k < t->n_special_lens; k++) {
        size_t l = t->special_lens[k];
        if (l > rem) continue;
        int32_t id = tok_lookup(t, p, l);
        if (id < 0) continue;
        uint8_t ty = t->type[id];
        if (ty == CV_TOK_TYPE_USER_DEFINED ||
            (l <= ctl_max && (ty == CV_TOK_TYPE_CONTROL || ty == CV_TOK_TYPE_UNKNOWN))) {
            *mlen = l;
            return id;
        }
    }
    return -1;
}

static cv_status encode_fragment(const cv_tok *t, const char *s, size_t len, int after_special,
                                 tok_out *o, cv_error *err) {
    if (t->kind == CV_TOK_SPM)
        return tok_spm_encode(t, s, len, t->add_space_prefix && after_special, o, err);
    return tok_bpe_encode(t, s, len, o, err);
}

static cv_status check_spans(const cv_tok_span *plain, size_t n_plain, size_t len, cv_error *err) {
    size_t end = 0;
    for (size_t i = 0; i < n_plain; i++) {
        if (plain[i].start < end || plain[i].start > len || plain[i].len > len - plain[i].start)
            return cv_errorf(err, CV_EINVAL,
                             "plain span %zu [%zu, +%zu) is not inside the %zu-byte text after the "
                             "previous span's end %zu: spans must be sorted and disjoint",
                             i, plain[i].start, plain[i].len, len, end);
        end = plain[i].start + plain[i].len;
    }
    return CV_OK;
}

/* How many bytes from p a control token may take: none inside a plain span, up to
 * the next span outside one. *k is the first span that does not end before p. */
static size_t control_room(const cv_tok_span *plain, size_t n_plain, size_t *k, size_t p,
                           size_t len) {
    while (*k < n_plain && (plain[*k].len == 0 || plain[*k].start + plain[*k].len <= p)) (*k)++;
    if (*k == n_plain) return len - p;
    return plain[*k].start <= p ? 0 : plain[*k].start - p;
}

cv_status cv_tok_encode_plain(const cv_tok *t, const char *text, size_t len, unsigned flags,
                              const cv_tok_span *plain, size_t n_plain, int32_t *ids, size_t cap,
                              size_t *n, cv_error *err) {
    *n = 0;
    if (len > TOK_MAX_INPUT)
        return cv_errorf(err, CV_ERANGE, "text of %zu bytes exceeds the tokenizer's limit of %zu",
                         len, TOK_MAX_INPUT);
    cv_status st = check_spans(plain, n_plain, len, err);
    if (st != CV_OK) return st;
    tok_out o = {ids, cap, 0};
    int add = (flags & CV_TOK_ADD_SPECIAL) != 0, parse = (flags & CV_TOK_PARSE_SPECIAL) != 0;
    if (add && t->add_bos) tok_out_push(&o, t->bos);
    /* SPM puts its leading space on the first text fragment and on any text that
     * follows a special token, as llama.cpp does. */
    int after_special = 1;
    size_t start = 0, k = 0;
    for (size_t p = 0; p < len && st == CV_OK;) {
        size_t ml, room = parse ? control_room(plain, n_plain, &k, p, len) : 0;
        int32_t id = t->n_special_lens ? match_special(t, text + p, len - p, room, &ml) : -1;
        if (id < 0) {
            p++;
            continue;
        }
        if (p > start) {
            st = encode_fragment(t, text + start, p - start, after_special, &o, err);
            after_special = 0;
        }
        tok_out_push(&o, id);
        after_special = 1;
        p += ml;
        start = p;
    }
    if (st == CV_OK && start < len) st = encode_fragment(t, text + start, len - start, after_special, &o, err);
    if (st != CV_OK) return st;
    if (add && t->add_eos) tok_out_push(&o, t->eos);
    *n = o.n;
    if (o.n > cap)
        return cv_errorf(err, CV_ERANGE, "the text needs %zu ids, room for %zu", o.n, cap);
    return CV_OK;
}

cv_status cv_tok_encode(const cv_tok *t, const char *text, size_t len, unsigned flags,
                        int32_t *ids, size_t cap, size_t *n, cv_error *err) {
    return cv_tok_encode_plain(t, text, len, flags, NULL, 0, ids, cap, n, err);
}

/* ---- decoding ---- */

cv_status cv_tok_piece(const cv_tok *t, int32_t id, unsigned flags, const char **piece,
                       size_t *len, cv_error *err) {
    if (id < 0 || id >= t->n)
        return cv_errorf(err, CV_EINVAL, "token id %d outside the vocabulary (0..%d)", id, t->n - 1);
    uint8_t ty = t->type[id];
    int hidden = ty != CV_TOK_TYPE_NORMAL && ty != CV_TOK_TYPE_BYTE && ty != CV_TOK_TYPE_USER_DEFINED;
    if (hidden && (flags & CV_TOK_RENDER_SPECIAL)) {
        *piece = t->text + t->text_off[id];
        *len = t->text_len[id];
    } else {
        *piece = t->piece + t->piece_off[id];
        *len = t->piece_len[id];
    }
    return CV_OK;
}

/* Drops the one space an SPM add_space_prefix put in front of the text. */
static void strip_space(const cv_tok *t, int *pending, const char **p, size_t *len) {
    if (!*pending || *len == 0) return;
    *pending = 0;
    if (t->add_space_prefix && (*p)[0] == ' ') {
        (*p)++;
        (*len)--;
    }
}

cv_status cv_tok_decode(const cv_tok *t, const int32_t *ids, size_t n_ids, unsigned flags,
                        char *out, size_t cap, size_t *len, cv_error *err) {
    size_t w = 0;
    int pending = (flags & CV_TOK_STRIP_SPACE) != 0;
    *len = 0;
    for (size_t i = 0; i < n_ids; i++) {
        const char *p;
        size_t l;
        cv_status st = cv_tok_piece(t, ids[i], flags, &p, &l, err);
        if (st != CV_OK) return st;
        strip_space(t, &pending, &p, &l);
        if (w + l <= cap) memcpy(out + w, p, l);
        w += l;
    }
    *len = w;
    if (w > cap) return cv_errorf(err, CV_ERANGE, "the text needs %zu bytes, room for %zu", w, cap);
    return CV_OK;
}

struct cv_tok_stream {
    const cv_tok *t;
    unsigned flags;
    int strip_pending;
    cv_utf8_stream u;
    char *buf;
};

cv_status cv_tok_stream_new(const cv_tok *t, unsigned flags, cv_tok_stream **out, cv_error *err) {
    cv_tok_stream *s = calloc(1, sizeof *s);
    char *buf = malloc(CV_UTF8_STREAM_BOUND(t->max_piece));
    if (!s || !buf) {
        free(s);
        free(buf);
        return cv_errorf(err, CV_ENOMEM, "token stream: out of memory");
    }
    s->t = t;
    s->flags = flags;
    s->strip_pending = (flags & CV_TOK_STRIP_SPACE) != 0;
    s->buf = buf;
    cv_utf8_stream_init(&s->u);
    *out = s;
    return CV_OK;
}

void cv_tok_stream_free(cv_tok_stream *s) {
    if (!s) return;
    free(s->buf);
    free(s);
}

cv_status cv_tok_stream_feed(cv_tok_stream *s, int32_t id, const char **text, size_t *len,
                             cv_error *err) {
    const char *p;
    size_t l;
    *text = s->buf;
    *len = 0;
    cv_status st = cv_tok_piece(s->t, id, s->flags, &p, &l, err);
    if (st != CV_OK) return st;
    strip_space(s->t, &s->strip_pending, &p, &l);
    *len = cv_utf8_stream_feed(&s->u, p, l, s->buf);
    return CV_OK;
}

void cv_tok_stream_flush(cv_tok_stream *s, const char **text, size_t *len) {
    *text = s->buf;
    *len = cv_utf8_stream_flush(&s->u, s->buf);
    s->strip_pending = (s->flags & CV_TOK_STRIP_SPACE) != 0;
}
