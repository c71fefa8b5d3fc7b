#include "json_scan.h"

#include <string.h>

enum {
    S_VALUE,     /* a value comes next */
    S_OBJ_FIRST, /* after '{': a key or '}' */
    S_KEY,       /* after ',' in an object: a key */
    S_COLON,     /* after a key */
    S_AFTER,     /* after a value inside a container: ',' or its close */
    S_ARR_FIRST, /* after '[': a value or ']' */
    S_STR,       /* in a string; sub: 0 plain, 1 after '\', 2..5 hex digits of \u left + 1 */
    S_LIT,       /* in true / false / null: lit is what is left */
    S_NUM,       /* in a number; sub: one of N_* */
    S_DONE,
};

enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };

static int is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

void cv_jscan_init(cv_jscan *s) {
    memset(s, 0, sizeof *s);
    s->st = S_VALUE;
}

void cv_jscan_init_after_member(cv_jscan *s) {
    memset(s, 0, sizeof *s);
    s->st = S_AFTER;
    s->depth = 1;
    s->stack[0] = '{';
}

/* A value just ended. */
static cv_jscan_r value_done(cv_jscan *s) {
    s->st = s->depth ? S_AFTER : S_DONE;
    return s->depth ? CV_JSCAN_MORE : CV_JSCAN_DONE;
}

static cv_jscan_r open_container(cv_jscan *s, uint8_t c) {
    if (s->depth == CV_JSCAN_DEPTH) return CV_JSCAN_BAD;
    s->stack[s->depth++] = c;
    s->st = c == '{' ? S_OBJ_FIRST : S_ARR_FIRST;
    return CV_JSCAN_MORE;
}

static cv_jscan_r close_container(cv_jscan *s, uint8_t c) {
    if (!s->depth || s->stack[s->depth - 1] != (c == '}' ? '{' : '[')) return CV_JSCAN_BAD;
    s->depth--;
    return value_done(s);
}

static cv_jscan_r start_value(cv_jscan *s, uint8_t c) {
    switch (c) {
    case '{': case '[': return open_container(s, c);
    case '"': s->st = S_STR; s->sub = 0; s->key = 0; return CV_JSCAN_MORE;
    case 't': s->st = S_LIT; s->lit = "rue"; return CV_JSCAN_MORE;
    case 'f': s->st = S_LIT; s->lit = "alse"; return CV_JSCAN_MORE;
    case 'n': s->st = S_LIT; s->lit = "ull"; return CV_JSCAN_MORE;
    case '-': s->st = S_NUM; s->sub = N_MINUS; return CV_JSCAN_MORE;
    default:
        if (!is_digit(c)) return CV_JSCAN_BAD;
        s->st = S_NUM;
        s->sub = c == '0' ? N_ZERO : N_INT;
        return CV_JSCAN_MORE;
    }
}

static cv_jscan_r after(cv_jscan *s, uint8_t c) {
    if (is_ws(c)) return CV_JSCAN_MORE;
    if (c == ',') {
        s->st = s->stack[s->depth - 1] == '{' ? S_KEY : S_VALUE;
        return CV_JSCAN_MORE;
    }
    if (c == '}' || c == ']') return close_container(s, c);
    return CV_JSCAN_BAD;
}

static cv_jscan_r string_byte(cv_jscan *s, uint8_t c) {
    if (s->sub == 0) {
        if (c == '"') {
            if (s->key) {
                s->st = S_COLON;
                return CV_JSCAN_MORE;
            }
            return value_done(s);
        }
        if (c == '\\') s->sub = 1;
        return c < 0x20 ? CV_JSCAN_BAD : CV_JSCAN_MORE;
    }
    if (s->sub == 1) {
        if (c == 'u') s->sub = 5;
        else if (strchr("\"\\/bfnrt", c) && c) s->sub = 0;
        else return CV_JSCAN_BAD;
        return CV_JSCAN_MORE;
    }
    if (!is_digit(c) && !((c | 0x20) >= 'a' && (c | 0x20) <= 'f')) return CV_JSCAN_BAD;
    s->sub = s->sub == 2 ? 0 : s->sub - 1;
    return CV_JSCAN_MORE;
}

/* A byte in a number: on, or its end (the byte then goes to what follows). */
static cv_jscan_r number_byte(cv_jscan *s, uint8_t c) {
    uint8_t n = s->sub;
    if (is_digit(c)) {
        if (n == N_ZERO) return CV_JSCAN_BAD;
        s->sub = n == N_MINUS ? (c == '0' ? N_ZERO : N_INT) : n == N_DOT ? N_FRAC : n >= N_E ? N_EXP : n;
        return CV_JSCAN_MORE;
    }
    if (c == '.' && (n == N_ZERO || n == N_INT)) return s->sub = N_DOT, CV_JSCAN_MORE;
    if ((c == 'e' || c == 'E') && (n == N_ZERO || n == N_INT || n == N_FRAC)) return s->sub = N_E, CV_JSCAN_MORE;
    if ((c == '+' || c == '-') && n == N_E) return s->sub = N_ESIGN, CV_JSCAN_MORE;
    if (n == N_MINUS || n == N_DOT || n == N_E || n == N_ESIGN || !s->depth) return CV_JSCAN_BAD;
    s->st = S_AFTER;
    return after(s, c);
}

cv_jscan_r cv_jscan_feed(cv_jscan *s0, uint8_t c) {
    cv_jscan s = *s0;
    cv_jscan_r r = CV_JSCAN_BAD;
    switch (s.st) {
    case S_VALUE: r = is_ws(c) ? CV_JSCAN_MORE : start_value(&s, c); break;
    case S_ARR_FIRST: r = is_ws(c) ? CV_JSCAN_MORE : c == ']' ? close_container(&s, c) : start_value(&s, c); break;
    case S_OBJ_FIRST:
    case S_KEY:
        if (is_ws(c)) r = CV_JSCAN_MORE;
        else if (c == '"') s.st = S_STR, s.sub = 0, s.key = 1, r = CV_JSCAN_MORE;
        else if (c == '}' && s.st == S_OBJ_FIRST) r = close_container(&s, c);
        break;
    case S_COLON:
        if (is_ws(c)) r = CV_JSCAN_MORE;
        else if (c == ':') s.st = S_VALUE, r = CV_JSCAN_MORE;
        break;
    case S_AFTER: r = after(&s, c); break;
    case S_STR: r = string_byte(&s, c); break;
    case S_LIT:
        if (c == (uint8_t)*s.lit) r = *++s.lit ? CV_JSCAN_MORE : value_done(&s);
        break;
    case S_NUM: r = number_byte(&s, c); break;
    default: break;
    }
    if (r != CV_JSCAN_BAD) *s0 = s;
    return r;
}
