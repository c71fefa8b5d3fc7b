/* rag_support: the numbers of a text (digits, English number words, Chinese numerals,
 * both mixed), and the verdict on answers over passages of tests/data/rag-qa: invented
 * numbers, an answer from a sentence about something else than what was asked, and
 * right answers (also worded apart from the passage) supported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rag_support.h"

static void collect(void *user, const char *num, size_t len) {
    char *out = user;
    size_t n = strlen(out);
    snprintf(out + n, 256 - n, "%s%.*s", n ? " " : "", (int)len, num);
}

static void numbers_are(const char *text, const char *want) {
    char got[256] = "";
    cv_rag_numbers(text, strlen(text), collect, got);
    if (strcmp(got, want)) fail_msg("numbers of \"%s\": got \"%s\", want \"%s\"", text, got, want);
}

static void test_numbers(void **state) {
    (void)state;
    numbers_are("The bridge is 1,340 metres long and opened on 2 June 1993.", "1340 2 1993");
    numbers_are("parcels of up to 4.5 kg, serviced every 18 months.", "4.5 18");
    numbers_are("carries four lanes and twenty cars, thirty more", "4 20 30");
    numbers_are("全长二千四百米，于二〇〇八年九月通车", "2400 2008 9");
    numbers_are("售价为四万五千元，或 4.5万元，或 4万5千元", "45000 45000 45000");
    numbers_are("2千四百米 and 八百五十米, 三十六小时, 十八公斤", "2400 850 36 18");
    numbers_are("四点五公斤", "4.5");
    numbers_are("2〇一五年, 2〇〇八年", "2015 2008");
    numbers_are("no numbers here, only words: fourteenth, onerous", "");
    numbers_are("1,34 and 12,3456 are not thousands", "1 34 12 3456");
    numbers_are("version 4.2. Then 3.", "4.2 3");
}

/* Passages of tests/data/rag-qa/corpus.jsonl. */
static const cv_rag_passage passages[] = {
    {"kb:qa", "en-velmora", "Velmora Bridge", "",
     "The Velmora Bridge crosses the Tessel River and is 1,340 metres long. Construction began in 1987 and the "
     "bridge opened on 2 June 1993. Its chief engineer was Ilse Marwick. The bridge carries four lanes of traffic "
     "and a tram line.", 0, 1, 0, 0},
    {"kb:qa", "en-quorn", "Quorn-7 heat pump", "",
     "The Quorn-7 heat pump was designed by Halvard Engineering in Tromsø and went on sale on 14 March 2019. Its "
     "compressor must be serviced every 18 months. The unit weighs 212 kg and uses R-290 propane as its "
     "refrigerant.", 0, 1, 0, 0},
    {"kb:qa", "en-calder", "Calder blue cheese", "",
     "Calder blue is a cheese made from sheep's milk in the village of Ashcombe. It is aged for nine weeks in "
     "limestone caves. The recipe was written down by the monk Brother Edric in 1421.", 0, 1, 0, 0},
    {"kb:qa", "zh-school", "望星中学", "",
     "望星中学创办于一九二三年，首任校长是陈若谷。学校现有学生一千八百名，校训是“勤学笃行”。", 0, 1, 0, 0},
    {"kb:qa", "zh-lake", "镜月湖", "",
     "镜月湖位于西峦山脚下，面积为十二平方公里，最深处达四十三米。湖中生活着一种特有的银鳞鱼。", 0, 1, 0, 0},
    {"kb:qa", "zh-train", "雪原快线", "",
     "雪原快线是连接北陵市和白桦镇的铁路线，全长三百一十公里，列车最高时速为二百五十公里。全程需要一小时四十分钟。", 0, 1, 0, 0},
    /* not of the corpus: a river named with the bridge's own characters */
    {"kb:qa", "t-river", "澜桥", "", "澜桥横跨澜江，全长九百米。", 0, 1, 0, 0},
};

static cv_rag_support_verdict judge(const char *question, const char *answer, const size_t *kept, size_t n,
                                    char *why) {
    cv_rag_passage p[sizeof passages / sizeof *passages];
    memcpy(p, passages, sizeof p);
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) p[i].len = strlen(p[i].text);
    cv_rag_support *s = cv_rag_support_new(question, p, kept, n);
    assert_non_null(s);
    cv_rag_support_verdict v = cv_rag_support_check(s, answer, strlen(answer), why, 64);
    cv_rag_support_free(s);
    return v;
}

#define EXPECT(v, q, a, ...)                                                                                   \
    do {                                                                                                       \
        const size_t kept_[] = {__VA_ARGS__};                                                                  \
        char why_[64];                                                                                         \
        cv_rag_support_verdict got_ = judge(q, a, kept_, sizeof kept_ / sizeof *kept_, why_);                  \
        if (got_ != (v))                                                                                       \
            fail_msg("%s / %s: %s (%s), want %s", q, a, cv_rag_support_verdict_name(got_), why_,                \
                     cv_rag_support_verdict_name(v));                                                          \
    } while (0)

static void test_invented_number(void **state) {
    (void)state;
    EXPECT(CV_RAG_INVENTED_NUMBER, "望星中学有多少名老师？", "望星中学有192名老师。", 3);
    EXPECT(CV_RAG_INVENTED_NUMBER, "How long is the Velmora Bridge?", "It is 1,430 metres long.", 0);
    /* a number the question gave is not invented, nor is one written another way */
    EXPECT(CV_RAG_SUPPORTED, "How long is the Velmora Bridge?", "The Velmora Bridge is 1340 metres long.", 0);
    EXPECT(CV_RAG_SUPPORTED, "雪原快线的列车最高时速是多少？", "250公里", 5);
}

static void test_off_question(void **state) {
    (void)state;
    /* the one term the passage lacks: the sentence the answer comes from is about lanes */
    EXPECT(CV_RAG_OFF_QUESTION, "How many tram stops are on the Velmora Bridge?", "The bridge carries four tram stops.",
           0);
    EXPECT(CV_RAG_OFF_QUESTION, "望星中学现任校长是谁？", "陈若谷", 3);
    EXPECT(CV_RAG_OFF_QUESTION, "镜月湖里的银鳞鱼有多长？", "银鳞鱼的最长距离是四十三米。", 4);
    /* the name is in another passage, about another subject */
    EXPECT(CV_RAG_OFF_QUESTION, "Who designed the Velmora Bridge?", "Halvard Engineering designed the Velmora Bridge.",
           0, 1);
    EXPECT(CV_RAG_UNSUPPORTED, "Who designed the Velmora Bridge?", "Gustave Eiffel.", 0, 1);
}

static void test_supported(void **state) {
    (void)state;
    EXPECT(CV_RAG_SUPPORTED, "Who was the chief engineer of the Velmora Bridge?", "Ilse Marwick.", 0);
    EXPECT(CV_RAG_SUPPORTED, "When did the Velmora Bridge open?", "It opened on 2 June 1993.", 0, 1);
    /* a pronoun's subject is the passage's title; an irregular verb's past form */
    EXPECT(CV_RAG_SUPPORTED, "How long is Calder blue cheese aged?", "It is aged for nine weeks.", 2);
    EXPECT(CV_RAG_SUPPORTED, "Who wrote down the recipe for Calder blue cheese?", "Brother Edric wrote it down.", 2);
    /* the kind of answer is no key term: which company, 多长时间, 哪一年 */
    EXPECT(CV_RAG_SUPPORTED, "Which company designed the Quorn-7 heat pump?", "Halvard Engineering.", 1);
    EXPECT(CV_RAG_SUPPORTED, "雪原快线全程需要多长时间？", "一小时四十分钟", 5);
    EXPECT(CV_RAG_SUPPORTED, "望星中学创办于哪一年？", "一九二三年", 3);
    /* a superlative is the kind of answer */
    EXPECT(CV_RAG_SUPPORTED, "Which is the longest bridge that crosses the Tessel River?", "The Velmora Bridge.", 0);
    /* two passages, one part each */
    EXPECT(CV_RAG_SUPPORTED, "How often must the Quorn-7 compressor be serviced, and when did the Velmora Bridge open?",
           "Every 18 months; the bridge opened on 2 June 1993.", 0, 1);
    /* one part of two answered; the other part asked alone is off the question */
    EXPECT(CV_RAG_SUPPORTED, "Who was the chief engineer of the Velmora Bridge, and how many tram stops does it have?",
           "Its chief engineer was Ilse Marwick.", 0);
    EXPECT(CV_RAG_OFF_QUESTION, "How many tram stops does the Velmora Bridge have?", "It carries four tram stops.", 0);
    EXPECT(CV_RAG_SUPPORTED, "望星中学的首任校长是谁？镜月湖有多深？", "首任校长是陈若谷。", 3, 4);
    /* the not-in-the-documents reply, and nothing new */
    EXPECT(CV_RAG_SUPPORTED, "What is the price of the Velmora Bridge?", "The documents do not say.", 0);
    EXPECT(CV_RAG_SUPPORTED, "镜月湖里的银鳞鱼有多长？", "资料中没有提到。", 4);
}

/* The question said back, and a passage handed back (issue 21: Gemma 3 270M). */
static void test_echo(void **state) {
    (void)state;
    EXPECT(CV_RAG_QUESTION_ECHO, "镜月湖里的银鳞鱼有多长？", "镜月湖里的银鳞鱼多长吗？", 4);
    EXPECT(CV_RAG_QUESTION_ECHO, "Who was the chief engineer of the Velmora Bridge?",
           "The chief engineer of the Velmora Bridge.", 0);
    /* a pick from the question's own words is an answer; in Chinese, characters of
     * the question side by side as a passage has them */
    EXPECT(CV_RAG_SUPPORTED, "澜桥横跨哪条江？", "澜桥横跨澜江。", 6);
    EXPECT(CV_RAG_SUPPORTED, "Was the chief engineer of the Velmora Bridge Ilse Marwick or Tom Bell?", "Ilse Marwick.",
           0);
    /* the whole passage: one sentence holds 现 (现有学生), another 校长, none answers 现任校长 */
    EXPECT(CV_RAG_PASSAGE_ECHO, "望星中学现任校长是谁？",
           "望星中学创办于一九二三年，首任校长陈若谷。学校现有学生一千八百名，校训是“勤学笃行”。", 3);
    EXPECT(CV_RAG_PASSAGE_ECHO, "How many tram stops does the Velmora Bridge have?",
           "The Velmora Bridge crosses the Tessel River and is 1,340 metres long. The bridge carries four lanes of "
           "traffic and a tram line.", 0);
    /* the passage with the answer in it: trimmed to the sentence that answers */
    EXPECT(CV_RAG_TRIMMED, "How often must the Quorn-7 compressor be serviced?",
           "The Quorn-7 heat pump was designed by Halvard Engineering in Tromsø. Its compressor must be serviced every "
           "18 months. The unit weighs 212 kg and uses R-290 propane as its refrigerant.", 1);
    /* two copied sentences, each answering one part: the answer stays whole */
    EXPECT(CV_RAG_SUPPORTED, "What does the Quorn-7 weigh, and how often must its compressor be serviced?",
           "Its compressor must be serviced every 18 months. The unit weighs 212 kg and uses R-290 propane as its "
           "refrigerant.", 1);
    /* one sentence copied is an extractive answer, judged whole as before */
    EXPECT(CV_RAG_SUPPORTED, "How long is Calder blue cheese aged?", "It is aged for nine weeks in limestone caves.", 2);
}

static size_t trimmed(const char *question, size_t passage, char *answer) {
    cv_rag_passage p[sizeof passages / sizeof *passages];
    memcpy(p, passages, sizeof p);
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) p[i].len = strlen(p[i].text);
    cv_rag_support *s = cv_rag_support_new(question, p, &passage, 1);
    assert_non_null(s);
    size_t n = cv_rag_support_trim(s, answer, strlen(answer));
    cv_rag_support_free(s);
    answer[n] = 0;
    return n;
}

static void test_trim(void **state) {
    (void)state;
    char a[] = " The Quorn-7 heat pump was designed by Halvard Engineering in Tromsø. Its compressor must be serviced "
               "every 18 months. The unit weighs 212 kg and uses R-290 propane as its refrigerant.";
    trimmed("How often must the Quorn-7 compressor be serviced?", 1, a);
    assert_string_equal(a, "Its compressor must be serviced every 18 months.");
    char z[] = "镜月湖位于西峦山脚下，面积为十二平方公里，最深处达四十三米。湖中生活着一种特有的银鳞鱼。";
    trimmed("镜月湖最深处有多深？", 4, z);
    assert_string_equal(z, "镜月湖位于西峦山脚下，面积为十二平方公里，最深处达四十三米。");
    /* not a trimmed verdict: untouched */
    char b[] = "It is aged for nine weeks.";
    assert_int_equal(trimmed("How long is Calder blue cheese aged?", 2, b), strlen("It is aged for nine weeks."));
    assert_string_equal(b, "It is aged for nine weeks.");
}

static void test_counts_and_refusal(void **state) {
    (void)state;
    uint64_t before[CV_RAG_SUPPORT_N], after[CV_RAG_SUPPORT_N];
    cv_rag_support_counts(before);
    cv_rag_support_count(CV_RAG_OFF_QUESTION);
    cv_rag_support_counts(after);
    assert_int_equal(after[CV_RAG_OFF_QUESTION], before[CV_RAG_OFF_QUESTION] + 1);
    assert_string_equal(cv_rag_support_verdict_name(CV_RAG_INVENTED_NUMBER), "invented_number");
    const size_t kept[] = {0};
    cv_rag_support *s = cv_rag_support_new("镜月湖有多深？", passages, kept, 0);
    assert_non_null(s);
    assert_string_equal(cv_rag_support_refusal(s), "资料中没有提到。");
    /* no passage: any new term is unsupported */
    assert_int_equal(cv_rag_support_check(s, "四十三米", strlen("四十三米"), NULL, 0), CV_RAG_INVENTED_NUMBER);
    cv_rag_support_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_invented_number),
        cmocka_unit_test(test_off_question),
        cmocka_unit_test(test_supported),
        cmocka_unit_test(test_echo),
        cmocka_unit_test(test_trim),
        cmocka_unit_test(test_counts_and_refusal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
