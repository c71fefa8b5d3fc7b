/* rag_guard (a RAG answer's loops end it, markers naming no passage are cut, with a
 * support check it holds the answer and replaces an unsupported one) and
 * rag_coverage (whether the passages hold the question's key terms). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "rag_coverage.h"
#include "rag_guard.h"

/* Feeds text in pieces of `step` bytes (0: whole), as the engine's chunks come; the
 * text that went out is in out, the trip is returned. */
static cv_rag_guard_trip run(size_t n_passages, int line_end, const char *text, size_t step, char *out) {
    cv_rag_guard *g = cv_rag_guard_new(n_passages, line_end);
    assert_non_null(g);
    size_t len = strlen(text), o = 0;
    cv_rag_guard_trip t = CV_RAG_GUARD_OK;
    for (size_t i = 0; i < len && !t;) {
        size_t n = step && step < len - i ? step : len - i;
        t = cv_rag_guard_feed(g, text + i, n);
        const char *p;
        size_t k;
        cv_rag_guard_take(g, &p, &k);
        memcpy(out + o, p, k);
        o += k;
        i += n;
    }
    const char *p;
    size_t k;
    cv_rag_guard_finish(g, &p, &k);
    memcpy(out + o, p, k);
    out[o + k] = 0;
    cv_rag_guard_free(g);
    return t;
}

static void test_marker_run_cut_after_first(void **state) {
    (void)state;
    char out[512];
    /* The generate --rag loop of issue 21, whole and token by token. */
    const char *loop = "It is serviced every 18 months [1] [2] [3] [4] [5] [6] [7] [8] [9] [10] [11] [1";
    for (size_t step = 0; step <= 3; step++) {
        assert_int_equal(run(4, 0, loop, step, out), CV_RAG_GUARD_TRIP_MARKERS);
        assert_string_equal(out, "It is serviced every 18 months [1]");
    }
    /* The same marker again and again, and markers separated by commas. */
    assert_int_equal(run(4, 0, "Yes [1][1][1][1]", 1, out), CV_RAG_GUARD_TRIP_MARKERS);
    assert_string_equal(out, "Yes [1]");
    assert_int_equal(run(4, 0, "Yes [1], [2], [3]", 2, out), CV_RAG_GUARD_TRIP_MARKERS);
    assert_string_equal(out, "Yes [1]");
    /* Two markers are a normal citation; markers apart in the text are too. */
    assert_int_equal(run(4, 0, "A [1] [2]. B [3]. C [1].", 1, out), CV_RAG_GUARD_OK);
    assert_string_equal(out, "A [1] [2]. B [3]. C [1].");
}

static void test_markers_out_of_range_removed(void **state) {
    (void)state;
    char out[512];
    uint64_t trips[CV_RAG_GUARD_N_TRIPS], before, after;
    cv_rag_guard_counts(trips, &before);
    assert_int_equal(run(2, 0, "Quill [2] is a raven [7], not [0] a crow [12].", 1, out), CV_RAG_GUARD_OK);
    assert_string_equal(out, "Quill [2] is a raven , not  a crow .");
    cv_rag_guard_counts(trips, &after);
    assert_int_equal(after - before, 3);
    /* Brackets that are not markers are text, also cut across chunks. */
    assert_int_equal(run(2, 0, "x[1234] [a] [] [", 1, out), CV_RAG_GUARD_OK);
    assert_string_equal(out, "x[1234] [a] [] [");
    /* A held-back "[1" at the end still goes out. */
    assert_int_equal(run(2, 0, "see [1", 1, out), CV_RAG_GUARD_OK);
    assert_string_equal(out, "see [1");
}

static void test_ngram_loop_cut_at_second_occurrence(void **state) {
    (void)state;
    char out[512];
    uint64_t trips[CV_RAG_GUARD_N_TRIPS], removed;
    cv_rag_guard_counts(trips, &removed);
    uint64_t loops = trips[CV_RAG_GUARD_TRIP_LOOP];
    const char *loop = "The price is 1000 yuan per kg. The price is 1000 yuan per kg. The price is 1000 yuan";
    assert_int_equal(run(4, 0, loop, 0, out), CV_RAG_GUARD_TRIP_LOOP);
    assert_string_equal(out, "The price is 1000 yuan per kg.");
    /* Streamed, what went out stays out: the answer ends before the chunk in which the
     * third one completed ("0 y": the space ends the word "1000"). */
    assert_int_equal(run(4, 0, loop, 3, out), CV_RAG_GUARD_TRIP_LOOP);
    assert_string_equal(out, "The price is 1000 yuan per kg. The price is 1000 yuan per kg. The price is 100");
    cv_rag_guard_counts(trips, &removed);
    assert_int_equal(trips[CV_RAG_GUARD_TRIP_LOOP], loops + 2);
    /* Chinese: eight characters three times. */
    assert_int_equal(run(4, 0, "价格是一千元每公斤。价格是一千元每公斤。价格是一千元每公斤。", 0, out), CV_RAG_GUARD_TRIP_LOOP);
    assert_string_equal(out, "价格是一千元每公斤。");
    /* A loop shorter than the n-gram (Gemma 3 270M's answers on bench-rag-qa): its
     * occurrences overlap and count. */
    assert_int_equal(run(4, 0, " 1. 1. 1. 1. 1. 1. 1. 1. 1. 1. 1. 1", 0, out), CV_RAG_GUARD_TRIP_LOOP);
    assert_string_equal(out, " 1.");
    assert_int_equal(run(4, 0, " 采摘时间： 采摘时间： 采摘时间： 采摘时间： 采摘时间： 采摘", 0, out),
                     CV_RAG_GUARD_TRIP_LOOP);
    assert_string_equal(out, " 采摘时间：");
    /* A phrase twice, and a sentence with common words, are fine. */
    const char *ok = "The bridge is long. The bridge is long, and the bridge is wide and the road is new.";
    assert_int_equal(run(4, 0, ok, 5, out), CV_RAG_GUARD_OK);
    assert_string_equal(out, ok);
}

static void test_line_end_for_generate(void **state) {
    (void)state;
    char out[512];
    assert_int_equal(run(2, 1, "\n The Quorn-7 is serviced every 18 months.\n\n[4] Why is", 2, out),
                     CV_RAG_GUARD_TRIP_LINE);
    assert_string_equal(out, "\n The Quorn-7 is serviced every 18 months.");
    /* Without line_end (Chat) a line break is text. */
    assert_int_equal(run(2, 0, "One.\nTwo.", 2, out), CV_RAG_GUARD_OK);
    assert_string_equal(out, "One.\nTwo.");
    assert_string_equal(cv_rag_guard_trip_name(CV_RAG_GUARD_TRIP_LINE), "line");
}

static double cover(const char *q, const char *title, const char *text) {
    cv_rag_analyzer *a;
    assert_int_equal(cv_rag_analyzer_create(NULL, 0, &a, NULL), CV_OK);
    cv_rag_passage p = {"kb:t", "d", title, "", text, strlen(text), 1, 0, 0};
    double c = cv_rag_coverage(a, q, &p, 1);
    cv_rag_analyzer_free(a);
    return c;
}

/* With a support check the guard holds the answer whole and, at the end, gives it,
 * the sentences of it that answer, or the not-in-the-documents reply instead
 * (rag_support.h judges; counted). */
static void test_support_holds_and_replaces(void **state) {
    (void)state;
    cv_rag_passage p = {"kb:qa", "en-velmora", "Velmora Bridge", "",
                        "The Velmora Bridge is 1,340 metres long. The bridge carries four lanes of traffic and a tram "
                        "line.", 0, 1, 0, 0};
    p.len = strlen(p.text);
    const size_t kept[] = {0};
    static const struct {
        const char *question, *answer, *out;
    } cases[] = {
        {"How long is the Velmora Bridge?", "It is 1,340 metres long.", "It is 1,340 metres long."},
        {"How many tram stops are on the Velmora Bridge?", "The bridge carries four tram stops.",
         "The documents do not say."},
        {"How long is the Velmora Bridge?", "It is 1,430 metres long.", "The documents do not say."},
        /* the passage handed back: cut to the sentence that answers */
        {"How many lanes of traffic does the Velmora Bridge carry?",
         " The Velmora Bridge is 1,340 metres long. The bridge carries four lanes of traffic and a tram line.",
         "The bridge carries four lanes of traffic and a tram line."},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        uint64_t before[CV_RAG_SUPPORT_N], after[CV_RAG_SUPPORT_N];
        cv_rag_support_counts(before);
        cv_rag_guard *g = cv_rag_guard_new(1, 0);
        assert_non_null(g);
        cv_rag_support *s = cv_rag_support_new(cases[c].question, &p, kept, 1);
        assert_non_null(s);
        cv_rag_guard_set_support(g, s);
        const char *a = cases[c].answer, *o;
        size_t k;
        for (size_t i = 0; a[i]; i += 3) {
            assert_int_equal(cv_rag_guard_feed(g, a + i, strlen(a + i) < 3 ? strlen(a + i) : 3), CV_RAG_GUARD_OK);
            cv_rag_guard_take(g, &o, &k);
            assert_int_equal(k, 0); /* held */
        }
        cv_rag_guard_finish(g, &o, &k);
        assert_int_equal(k, strlen(cases[c].out));
        assert_memory_equal(o, cases[c].out, k);
        cv_rag_guard_free(g);
        cv_rag_support_counts(after);
        uint64_t judged = 0;
        for (int v = 0; v < CV_RAG_SUPPORT_N; v++) judged += after[v] - before[v];
        assert_int_equal(judged, 1);
        assert_int_equal(after[CV_RAG_SUPPORTED] - before[CV_RAG_SUPPORTED], c == 0);
        assert_int_equal(after[CV_RAG_TRIMMED] - before[CV_RAG_TRIMMED], c == 3);
    }
}

static void test_coverage(void **state) {
    (void)state;
    const char *quorn = "A Quorn-7 needs a clear outdoor space. The pipes are filled with a glycol mixture.";
    /* Issue 21's example: Quorn-7 and glycol are there, a boiling point is not. */
    assert_true(cover("What is the boiling point of the Quorn-7 glycol?", "Installing a Quorn-7", quorn) <
                CV_RAG_MIN_COVERAGE_DEFAULT);
    /* Question words do not count; a word held in another form does. */
    assert_true(cover("How often are the Quorn-7 pipes filled?", "", quorn) == 1.0);
    /* Nor do words naming the kind of answer (bench-rag-qa en12 was refused on them). */
    assert_true(cover("On which day of the week is the library closed?", "Brimwood Public Library",
                      "The library is closed on Tuesdays.") == 1.0);
    /* Chinese by characters: 云雾岭白茶 and 产 are there, 价格 and 量 are not (6 of 9);
     * the question characters 的, 和, 是, 多, 少 do not count. */
    const char *tea = "云雾岭白茶产自青溪县，每年的第一次采摘在清明节前十天开始。";
    assert_float_equal(cover("云雾岭白茶的价格和产量是多少？", "云雾岭白茶", tea), 6.0 / 9, 1e-9);
    assert_true(cover("云雾岭白茶的第一次采摘什么时候开始？", "云雾岭白茶", tea) >= CV_RAG_MIN_COVERAGE_DEFAULT);
    /* The title holds the subject, no passage what is asked about it: 0, not 4 of 5;
     * with one asked term held, the share. */
    const char *zephyr = "The Zephyr-9 delivery drone has a range of 38 kilometres.";
    assert_true(cover("What is the price of the Zephyr-9 delivery drone?", "Zephyr-9 delivery drone", zephyr) == 0);
    assert_float_equal(cover("What is the price and range of the Zephyr-9 delivery drone?",
                             "Zephyr-9 delivery drone", zephyr), 5.0 / 6, 1e-9);
    assert_true(cover("云雾岭白茶的价格是多少？", "云雾岭白茶", tea) == 0);
    /* Nothing to check: covered. */
    assert_true(cover("what is it?", "", quorn) == 1.0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_marker_run_cut_after_first),
        cmocka_unit_test(test_markers_out_of_range_removed),
        cmocka_unit_test(test_ngram_loop_cut_at_second_occurrence),
        cmocka_unit_test(test_line_end_for_generate),
        cmocka_unit_test(test_support_holds_and_replaces),
        cmocka_unit_test(test_coverage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
