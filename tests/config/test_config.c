/* Tests of the configuration loader (train/config.c): every error message, compared exactly;
 * the defaults; --set overrides; the rendered text loading back to the same config; and every
 * shipped configs/ YAML file loading cleanly.
 *
 * Usage: test_config errors | defaults | overrides | roundtrip | files CONFIG_DIR */
#include "train/config.h"

#include <glob.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_failures;

/* Reports one failed expectation (with where it is in this file) and counts it. */
static void check_at(bool ok, const char *what, const char *file, int line) {
    if (ok) return;
    g_failures++;
    printf("  FAILED at %s:%d: %s\n", file, line, what);
}
#define CHECK(cond) check_at((cond), #cond, __FILE__, __LINE__)

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define SETS(...) (const char *const[]){__VA_ARGS__}, N(((const char *const[]){__VA_ARGS__}))
#define NO_SETS NULL, 0

/* ---------------------------------------------------------------------------------------------- */
/* Error paths                                                                                    */

static void expect_error_at(const char *what, const char *yaml, const char *const *sets, int n_sets,
                            const char *expected, int line) {
    rmx_config cfg;
    char err[2048] = "";
    printf("check: %s\n", what);
    if (rmx_config_load_string(&cfg, "t.yaml", yaml, sets, n_sets, err, sizeof err) == 0) {
        rmx_config_free(&cfg);
        check_at(false, "the config loaded, but an error was expected", __FILE__, line);
        return;
    }
    CHECK(cfg.text == NULL);
    if (strcmp(err, expected) != 0) {
        check_at(false, "message differs", __FILE__, line);
        printf("    expected: %s\n    got:      %s\n", expected, err);
    }
}
#define EXPECT_ERROR(what, yaml, sets, expected) expect_error_at(what, yaml, sets, expected, __LINE__)

static void test_unknown_keys(void) {
    EXPECT_ERROR("unknown key with a close known key", "train:\n  lrr: 1\n", NO_SETS,
                 "t.yaml:2:3: train.lrr: unknown key, did you mean 'train.lr'?");
    EXPECT_ERROR("unknown key with nothing close", "train:\n  flux_capacitor: 1\n", NO_SETS,
                 "t.yaml:2:3: train.flux_capacitor: unknown key");
    EXPECT_ERROR("misspelt section (transposed letters)", "modle:\n  channels: 8\n", NO_SETS,
                 "t.yaml:1:1: modle: unknown key, did you mean 'model'?");
    EXPECT_ERROR("key in the wrong section", "stage: vae\ntrain:\n  channels: 8\n", NO_SETS,
                 "t.yaml:3:3: train.channels: unknown key, did you mean 'model.channels'?");
    EXPECT_ERROR("unknown top-level key", "colour: blue\n", NO_SETS, "t.yaml:1:1: colour: unknown key");
}

static void test_wrong_types(void) {
    EXPECT_ERROR("word for an integer", "model:\n  channels: eight\n", NO_SETS,
                 "t.yaml:2:13: model.channels: expected an integer, got 'eight'");
    EXPECT_ERROR("fraction for an integer", "train:\n  steps: 1.5\n", NO_SETS,
                 "t.yaml:2:10: train.steps: expected an integer, got '1.5'");
    EXPECT_ERROR("word for a number", "train:\n  lr: fast\n", NO_SETS,
                 "t.yaml:2:7: train.lr: expected a number, got 'fast'");
    EXPECT_ERROR("nan is not a number", "train:\n  lr: nan\n", NO_SETS,
                 "t.yaml:2:7: train.lr: expected a number, got 'nan'");
    EXPECT_ERROR("enum value not allowed", "stage: gan\n", NO_SETS,
                 "t.yaml:1:8: stage: expected one of vae, diffusion, remix, got 'gan'");
    EXPECT_ERROR("enum is case-sensitive", "model:\n  bottleneck: VQ\n", NO_SETS,
                 "t.yaml:2:15: model.bottleneck: expected one of kl, vq, got 'VQ'");
    EXPECT_ERROR("negative seed", "train:\n  seed: -1\n", NO_SETS,
                 "t.yaml:2:9: train.seed: expected a non-negative integer, got '-1'");
    EXPECT_ERROR("empty value for a number", "train:\n  lr:\n  steps: 3\n", NO_SETS,
                 "t.yaml:2:6: train.lr: expected a number, got an empty value");
    EXPECT_ERROR("alias", "train:\n  lr: &x 0.5\n  min_lr: *x\n", NO_SETS,
                 "t.yaml:3:11: train.min_lr: expected a number, got alias '*x' (aliases are not supported)");
    EXPECT_ERROR("NUL inside a string", "data:\n  train: \"a\\0b\"\n", NO_SETS,
                 "t.yaml:2:10: data.train: expected text without NUL characters");
}

static void test_ranges(void) {
    EXPECT_ERROR("integer below its minimum", "checkpoint:\n  keep: 0\n", NO_SETS,
                 "t.yaml:2:9: checkpoint.keep: expected an integer >= 1, got '0'");
    EXPECT_ERROR("integer above its maximum", "model:\n  channels: 5000\n", NO_SETS,
                 "t.yaml:2:13: model.channels: expected an integer from 1 to 4096, got '5000'");
    EXPECT_ERROR("integer beyond int", "train:\n  global_batch: 3000000000\n", NO_SETS,
                 "t.yaml:2:17: train.global_batch: expected an integer from 1 to 2147483647, got '3000000000'");
    EXPECT_ERROR("integer beyond int64", "train:\n  steps: 99999999999999999999\n", NO_SETS,
                 "t.yaml:2:10: train.steps: expected an integer from 1 to 9223372036854775807, "
                 "got '99999999999999999999'");
    EXPECT_ERROR("seed beyond uint64", "train:\n  seed: 18446744073709551616\n", NO_SETS,
                 "t.yaml:2:9: train.seed: expected an integer from 0 to 18446744073709551615, "
                 "got '18446744073709551616'");
    EXPECT_ERROR("number not above its open minimum", "train:\n  lr: 0\n", NO_SETS,
                 "t.yaml:2:7: train.lr: expected a number > 0, got '0'");
    EXPECT_ERROR("negative number", "train:\n  lr: -1e-3\n", NO_SETS,
                 "t.yaml:2:7: train.lr: expected a number > 0, got '-1e-3'");
    EXPECT_ERROR("number at the open end of [0, 1)", "train:\n  beta2: 1.0\n", NO_SETS,
                 "t.yaml:2:10: train.beta2: expected a number >= 0 and < 1, got '1.0'");
    EXPECT_ERROR("number that rounds to 1 as a float", "model:\n  ema_decay: 0.99999999999\n", NO_SETS,
                 "t.yaml:2:14: model.ema_decay: expected a number >= 0 and < 1, got '0.99999999999'");
    EXPECT_ERROR("number too large for a float", "train:\n  grad_clip: 1e39\n", NO_SETS,
                 "t.yaml:2:14: train.grad_clip: expected a number that fits a float, got '1e39'");
    EXPECT_ERROR("empty string where one is required", "run:\n  dir: ''\n", NO_SETS,
                 "t.yaml:2:8: run.dir: expected a non-empty string, got an empty value");
}

static void test_too_long_string(void) {
    char yaml[2048];
    int n = snprintf(yaml, sizeof yaml, "data:\n  train: ");
    memset(yaml + n, 'x', 1100);
    strcpy(yaml + n + 1100, "\n");
    EXPECT_ERROR("string longer than its field", yaml, NO_SETS,
                 "t.yaml:2:10: data.train: expected a string of at most 1023 bytes, got 1100 bytes");
}

static void test_shapes(void) {
    EXPECT_ERROR("mapping where a number is expected", "train:\n  lr:\n    value: 1\n", NO_SETS,
                 "t.yaml:3:5: train.lr: expected a number, got a mapping");
    EXPECT_ERROR("list where a number is expected", "train:\n  lr: [1, 2]\n", NO_SETS,
                 "t.yaml:2:7: train.lr: expected a number, got a list");
    EXPECT_ERROR("scalar where a section is expected", "train: 5\n", NO_SETS,
                 "t.yaml:1:8: train: expected a mapping of train.* keys, got '5'");
    EXPECT_ERROR("list where a section is expected", "model: [1]\n", NO_SETS,
                 "t.yaml:1:8: model: expected a mapping of model.* keys, got a list");
    EXPECT_ERROR("scalar where a list is expected", "model:\n  channel_mult: 4\n", NO_SETS,
                 "t.yaml:2:17: model.channel_mult: expected a list of integers, got '4'");
    EXPECT_ERROR("list entry of the wrong type", "model:\n  channel_mult: [1, two, 4]\n", NO_SETS,
                 "t.yaml:2:21: model.channel_mult[1]: expected an integer, got 'two'");
    EXPECT_ERROR("list entry out of range", "model:\n  channel_mult:\n    - 1\n    - 0\n", NO_SETS,
                 "t.yaml:4:7: model.channel_mult[1]: expected an integer from 1 to 64, got '0'");
    EXPECT_ERROR("nested list entry", "model:\n  channel_mult: [[1]]\n", NO_SETS,
                 "t.yaml:2:18: model.channel_mult[0]: expected an integer, got a list");
    EXPECT_ERROR("list too long", "model:\n  channel_mult: [1, 1, 1, 1, 1, 1, 1, 1, 1]\n", NO_SETS,
                 "t.yaml:2:17: model.channel_mult: expected a list of 1 to 8 integers, got 9 entries");
    EXPECT_ERROR("empty list", "model:\n  channel_mult: []\n", NO_SETS,
                 "t.yaml:2:17: model.channel_mult: expected a list of 1 to 8 integers, got an empty list");
    EXPECT_ERROR("scalar at the top level", "hello\n", NO_SETS,
                 "t.yaml:1:1: expected a mapping of keys at the top level, got 'hello'");
    EXPECT_ERROR("list at the top level", "- stage\n", NO_SETS,
                 "t.yaml:1:1: expected a mapping of keys at the top level, got a list");
    EXPECT_ERROR("list used as a key", "? [a]\n: 1\n", NO_SETS, "t.yaml:1:3: expected a key name, got a list");
}

static void test_duplicates(void) {
    EXPECT_ERROR("duplicate key", "train:\n  lr: 0.1\n  lr: 0.2\n", NO_SETS,
                 "t.yaml:3:3: train.lr: duplicate key, first given at line 2");
    EXPECT_ERROR("duplicate section", "train:\n  lr: 0.1\nmodel:\n  channels: 8\ntrain:\n  steps: 2\n", NO_SETS,
                 "t.yaml:5:1: train: duplicate key, first given at line 1");
    EXPECT_ERROR("duplicate through a dotted key", "train.lr: 0.1\ntrain:\n  lr: 0.2\n", NO_SETS,
                 "t.yaml:3:3: train.lr: duplicate key, first given at line 1");
}

static void test_syntax(void) {
    EXPECT_ERROR("tab indentation", "train:\n\tlr: 0.1\n", NO_SETS,
                 "t.yaml:2:1: YAML syntax error: found character that cannot start any token "
                 "(while scanning for the next token at line 2, column 1)");
    EXPECT_ERROR("unclosed flow list", "model:\n  channel_mult: [1, 2\n", NO_SETS,
                 "t.yaml:3:1: YAML syntax error: did not find expected ',' or ']' "
                 "(while parsing a flow sequence at line 2, column 17)");
    EXPECT_ERROR("unclosed quote", "stage: \"vae\n", NO_SETS,
                 "t.yaml:2:1: YAML syntax error: found unexpected end of stream "
                 "(while scanning a quoted scalar at line 1, column 8)");
    EXPECT_ERROR("second colon on a line", "stage: vae: x\n", NO_SETS,
                 "t.yaml:1:11: YAML syntax error: mapping values are not allowed in this context");
    EXPECT_ERROR("bad indentation", "train:\n  lr: 0.1\n steps: 2\n", NO_SETS,
                 "t.yaml:3:2: YAML syntax error: did not find expected key "
                 "(while parsing a block mapping at line 1, column 1)");
    EXPECT_ERROR("invalid UTF-8", "stage: \xff\n", NO_SETS,
                 "t.yaml: YAML syntax error: invalid leading UTF-8 octet at byte 7");
    EXPECT_ERROR("two documents", "stage: vae\n---\nstage: vae\n", NO_SETS,
                 "t.yaml:2:1: expected a single YAML document, got a second one");
}

static void test_relations(void) {
    EXPECT_ERROR("global batch not a multiple of the micro-batch", "train:\n  global_batch: 10\n  micro_batch: 4\n",
                 NO_SETS, "t.yaml:2:17: train.global_batch: expected a multiple of train.micro_batch (4), got '10'");
    EXPECT_ERROR("default global batch, reported where the micro-batch was set", "train:\n  micro_batch: 5\n",
                 NO_SETS, "t.yaml:2:16: train.global_batch: expected a multiple of train.micro_batch (5), got '64'");
    EXPECT_ERROR("relation broken by --set", "", SETS("train.micro_batch=7"),
                 "--set train.micro_batch=7: train.global_batch: expected a multiple of train.micro_batch (7), "
                 "got '64'");
    EXPECT_ERROR("vq with a one-entry codebook", "model:\n  bottleneck: vq\n  codebook_size: 1\n", NO_SETS,
                 "t.yaml:3:18: model.codebook_size: expected an integer >= 2 when model.bottleneck is vq, got '1'");
    EXPECT_ERROR("min_lr above lr", "train:\n  lr: 1e-4\n  min_lr: 1e-3\n", NO_SETS,
                 "t.yaml:3:11: train.min_lr: expected a number <= train.lr (0.0001), got '0.001'");
}

/* Keys of another stage's sections would be ignored silently: they are errors, where they were set. */
static void test_stage_keys(void) {
#define DIFF "stage: diffusion\nautoencoder:\n  checkpoint: runs/vae/ckpt-00000150.h5\n"
    EXPECT_ERROR("an autoencoder key in a diffusion config", DIFF "model:\n  channels: 16\n", NO_SETS,
                 "t.yaml:5:13: model.channels: belongs to stage vae, but this config's stage is diffusion "
                 "(the autoencoder's architecture comes from autoencoder.checkpoint)");
    EXPECT_ERROR("a transformer key in a vae config", "dit:\n  depth: 4\n", NO_SETS,
                 "t.yaml:2:10: dit.depth: belongs to stage diffusion, but this config's stage is vae");
    EXPECT_ERROR("a diffusion key set by --set in a vae config", "", SETS("diffusion.label_drop=0.2"),
                 "--set diffusion.label_drop=0.2: diffusion.label_drop: belongs to stage diffusion, but this "
                 "config's stage is vae");
#define REMIX "stage: remix\ndiffusion:\n  checkpoint: runs/dit/ckpt-00004000.h5\n"
    EXPECT_ERROR("a transformer key in a remix config", REMIX "dit:\n  depth: 4\n", NO_SETS,
                 "t.yaml:5:10: dit.depth: belongs to stage diffusion, but this config's stage is remix (the "
                 "autoencoder, the transformer and the schedule come from diffusion.checkpoint)");
    EXPECT_ERROR("a remix key in a diffusion config", DIFF "remix:\n  style_weight: 3\n", NO_SETS,
                 "t.yaml:5:17: remix.style_weight: belongs to stage remix, but this config's stage is diffusion");
    EXPECT_ERROR("a remix without its stage-2 checkpoint", "stage: remix\n", NO_SETS,
                 "t.yaml:1:8: diffusion.checkpoint: expected the path of a stage-2 checkpoint (stage remix starts "
                 "from its transformer and autoencoder)");
    EXPECT_ERROR("strength range upside down", REMIX "remix:\n  strength_min: 0.8\n  strength_max: 0.2\n",
                 NO_SETS, "t.yaml:6:17: remix.strength_max: expected a number >= remix.strength_min (0.8), got '0.2'");
    EXPECT_ERROR("heads not dividing the width", DIFF "dit:\n  hidden: 384\n  heads: 5\n", NO_SETS,
                 "t.yaml:6:10: dit.heads: expected a divisor of dit.hidden (384), got '5'");
    EXPECT_ERROR("a width the 2-D positions cannot split", DIFF "dit:\n  hidden: 66\n  heads: 3\n", NO_SETS,
                 "t.yaml:5:11: dit.hidden: expected a multiple of 4 (the 2-D sin-cos positions), got '66'");
    EXPECT_ERROR("beta schedule upside down", DIFF "diffusion:\n  beta_start: 0.1\n  beta_end: 0.01\n", NO_SETS,
                 "t.yaml:6:13: diffusion.beta_end: expected a number > diffusion.beta_start (0.1) and < 1, "
                 "got '0.01'");
    EXPECT_ERROR("diffusion without an autoencoder", "stage: diffusion\n", NO_SETS,
                 "t.yaml:1:8: autoencoder.checkpoint: expected the path of a stage-1 checkpoint (stage diffusion "
                 "trains over a frozen autoencoder)");
#undef DIFF
}

static void test_set_errors(void) {
    EXPECT_ERROR("--set number", "", SETS("train.lr=abc"), "--set train.lr=abc: train.lr: expected a number, got 'abc'");
    EXPECT_ERROR("--set without '='", "", SETS("train.lr"), "--set train.lr: expected key.path=value");
    EXPECT_ERROR("--set without a key", "", SETS("=1"), "--set =1: expected key.path=value");
    EXPECT_ERROR("--set unknown key", "", SETS("train.lrr=1"),
                 "--set train.lrr=1: train.lrr: unknown key, did you mean 'train.lr'?");
    EXPECT_ERROR("--set a section", "", SETS("train=1"),
                 "--set train=1: train: expected a full key path such as 'train.steps'");
    EXPECT_ERROR("--set out of range", "", SETS("checkpoint.keep=0"),
                 "--set checkpoint.keep=0: checkpoint.keep: expected an integer >= 1, got '0'");
    EXPECT_ERROR("--set enum to nothing", "", SETS("device="),
                 "--set device=: device: expected one of auto, cpu, cuda, got an empty value");
    EXPECT_ERROR("--set list entry", "", SETS("model.channel_mult=[1,x]"),
                 "--set model.channel_mult=[1,x]: model.channel_mult[1]: expected an integer, got 'x'");
    EXPECT_ERROR("--set list with a trailing comma", "", SETS("model.channel_mult=1,2,"),
                 "--set model.channel_mult=1,2,: model.channel_mult[2]: expected an integer, got an empty value");
    EXPECT_ERROR("--set list without its closing bracket", "", SETS("model.channel_mult=[1,2"),
                 "--set model.channel_mult=[1,2: model.channel_mult: expected a list of integers, got '[1,2'");
    EXPECT_ERROR("--set empty list", "", SETS("model.channel_mult=[ ]"),
                 "--set model.channel_mult=[ ]: model.channel_mult: expected a list of 1 to 8 integers, "
                 "got an empty list");
    EXPECT_ERROR("--set string that is not UTF-8", "", SETS("data.train=a\xff"),
                 "--set data.train=a\xff: data.train: expected UTF-8 text, got 'a\xff'");
    EXPECT_ERROR("second --set fails after a good one", "", SETS("train.lr=1e-3", "stage=gan"),
                 "--set stage=gan: stage: expected one of vae, diffusion, remix, got 'gan'");
    EXPECT_ERROR("file errors come before --set errors", "stage: gan\n", SETS("stage=x"),
                 "t.yaml:1:8: stage: expected one of vae, diffusion, remix, got 'gan'");
}

/* Writes `text` to DIR/NAME and returns the path (static storage). */
static const char *write_file(const char *dir, const char *name, const char *text) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        printf("  cannot write %s\n", path);
        exit(2);
    }
    return path;
}

static void expect_load_error(const char *what, const char *path, const char *expected) {
    rmx_config cfg;
    char err[2048] = "";
    printf("check: %s\n", what);
    int rc = rmx_config_load(&cfg, path, NULL, 0, err, sizeof err);
    CHECK(rc == -1);
    if (rc == 0) rmx_config_free(&cfg);
    if (strcmp(err, expected) != 0) {
        CHECK(!"message differs");
        printf("    expected: %s\n    got:      %s\n", expected, err);
    }
}

static void test_files(void) {
    char dir[] = "/tmp/rmx-config-test-XXXXXX", expected[2048];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
    char missing[1100];
    snprintf(missing, sizeof missing, "%s/missing.yaml", dir);
    snprintf(expected, sizeof expected, "%s: cannot read: No such file or directory", missing);
    expect_load_error("missing file", missing, expected);

    snprintf(expected, sizeof expected, "%s: cannot read: Is a directory", dir);
    expect_load_error("directory instead of a file", dir, expected);

    const char *path = write_file(dir, "bad.yaml", "stage: vae\ntrain:\n  lr: slow\n");
    snprintf(expected, sizeof expected, "%s:3:7: train.lr: expected a number, got 'slow'", path);
    expect_load_error("error in a file names the file", path, expected);
    unlink(path);
    rmdir(dir);
}

static void run_errors(void) {
    test_unknown_keys();
    test_wrong_types();
    test_ranges();
    test_too_long_string();
    test_shapes();
    test_duplicates();
    test_syntax();
    test_relations();
    test_stage_keys();
    test_set_errors();
    test_files();
}

/* ---------------------------------------------------------------------------------------------- */
/* Defaults and overrides                                                                         */

static bool load_ok(rmx_config *cfg, const char *yaml, const char *const *sets, int n_sets) {
    char err[2048] = "";
    if (rmx_config_load_string(cfg, "t.yaml", yaml, sets, n_sets, err, sizeof err) == 0) return true;
    printf("  unexpected error: %s\n", err);
    return false;
}

/* Compares two configs field by field (every byte of the struct but the origin and the text). */
static bool same_config(const rmx_config *a, const rmx_config *b) {
    rmx_config x = *a, y = *b;
    memset(x.path, 0, sizeof x.path);
    memset(y.path, 0, sizeof y.path);
    x.text = y.text = NULL;
    return memcmp(&x, &y, sizeof x) == 0;
}

static void check_default_values(const rmx_config *c) {
    CHECK(strcmp(c->stage, "vae") == 0);
    CHECK(strcmp(c->device, "auto") == 0);
    CHECK(strcmp(c->data.train, "") == 0 && strcmp(c->data.val, "") == 0);
    CHECK(c->data.prefetch == 4);
    CHECK(c->model.channels == 32);
    CHECK(c->model.n_levels == 3 && c->model.channel_mult[0] == 1 && c->model.channel_mult[1] == 2 &&
          c->model.channel_mult[2] == 4 && c->model.channel_mult[3] == 0);
    CHECK(c->model.res_blocks == 1 && c->model.latent_channels == 8);
    CHECK(strcmp(c->model.bottleneck, "kl") == 0);
    CHECK(c->model.kl_weight == 1e-6f && c->model.codebook_size == 512);
    CHECK(c->model.commitment == 0.25f && c->model.ema_decay == 0.99f);
    CHECK(c->train.steps == 100000 && c->train.global_batch == 64 && c->train.micro_batch == 8);
    CHECK(c->train.lr == 1e-4f && c->train.min_lr == 0.0f && c->train.warmup == 1000);
    CHECK(c->train.weight_decay == 0.0f && c->train.beta1 == 0.9f && c->train.beta2 == 0.999f);
    CHECK(c->train.eps == 1e-8f && c->train.grad_clip == 1.0f && c->train.seed == 0);
    CHECK(c->train.threads == 0 && c->train.max_nonfinite == 5);
    CHECK(c->eval.every == 1000 && c->eval.batches == 8 && c->log.every == 50);
    CHECK(strcmp(c->run.dir, "runs/default") == 0);
    CHECK(strcmp(c->checkpoint.dir, "") == 0 && c->checkpoint.every == 1000 && c->checkpoint.keep == 3);
    CHECK(strcmp(c->checkpoint.resume, "auto") == 0);
}

static void run_defaults(void) {
    rmx_config d, c;
    printf("check: rmx_config_defaults gives the documented values and no text\n");
    memset(&d, 0x5a, sizeof d); /* defaults must not depend on what was there before */
    rmx_config_defaults(&d);
    check_default_values(&d);
    CHECK(d.text == NULL);

    const char *empty_docs[] = {"", "# nothing but a comment\n", "---\n", "~\n", "train:\nmodel:\n", "{}\n"};
    for (int i = 0; i < N(empty_docs); i++) {
        printf("check: a config with no keys (form %d) loads as the defaults\n", i);
        if (!load_ok(&c, empty_docs[i], NO_SETS)) {
            CHECK(!"loads");
            continue;
        }
        CHECK(same_config(&c, &d));
        CHECK(c.text != NULL && strcmp(c.path, "t.yaml") == 0);
        rmx_config_free(&c);
        CHECK(c.text == NULL);
    }

    printf("check: --help-config lists every key with its default and range\n");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    rmx_config_print_schema(f);
    fclose(f);
    CHECK(strstr(buf, "train.lr (default 1e-4)\n    peak learning rate (AdamW) [a number > 0]\n") != NULL);
    CHECK(strstr(buf, "checkpoint.resume (default \"auto\")") != NULL);
    CHECK(strstr(buf, "model.kl_weight (default 1e-6)") != NULL);
    free(buf);
}

static void run_overrides(void) {
    rmx_config c;
    printf("check: --set wins over the file, and later --set over earlier\n");
    if (load_ok(&c, "train:\n  lr: 1e-3\n  steps: 10\n", SETS("train.lr=2e-3", "train.steps=20", "train.steps=30"))) {
        CHECK(c.train.lr == 2e-3f && c.train.steps == 30);
        rmx_config_free(&c);
    } else CHECK(!"loads");

    printf("check: --set of every kind of key\n");
    if (load_ok(&c, "",
                SETS("stage=vae", "device=cpu", "data.train=../shards/*.h5", "data.val=", "model.channel_mult=2,4",
                     "model.bottleneck=vq", "train.seed=18446744073709551615", "train.warmup=0",
                     "checkpoint.resume=never", "data.val=a=b", "train.global_batch=12", "train.micro_batch=3"))) {
        CHECK(strcmp(c.stage, "vae") == 0 && strcmp(c.device, "cpu") == 0);
        CHECK(strcmp(c.data.train, "../shards/*.h5") == 0); /* relative paths stay as given */
        CHECK(strcmp(c.data.val, "a=b") == 0);              /* only the first '=' separates */
        CHECK(c.model.n_levels == 2 && c.model.channel_mult[0] == 2 && c.model.channel_mult[1] == 4 &&
              c.model.channel_mult[2] == 0);
        CHECK(strcmp(c.model.bottleneck, "vq") == 0 && c.train.seed == UINT64_MAX && c.train.warmup == 0);
        CHECK(strcmp(c.checkpoint.resume, "never") == 0);
        CHECK(c.train.global_batch == 12 && c.train.micro_batch == 3);
        rmx_config_free(&c);
    } else CHECK(!"loads");

    printf("check: --set lists with brackets and spaces\n");
    if (load_ok(&c, "model:\n  channel_mult: [1, 2, 4, 8]\n", SETS("model.channel_mult=[ 3 , 5 ,7 ]"))) {
        CHECK(c.model.n_levels == 3 && c.model.channel_mult[2] == 7 && c.model.channel_mult[3] == 0);
        rmx_config_free(&c);
    } else CHECK(!"loads");

    printf("check: YAML forms: dotted keys, flow mappings, block lists, quoted numbers, null sections\n");
    if (load_ok(&c,
                "train.lr: 0.5\nmodel: {channels: 16, bottleneck: vq}\ndata:\n  train: ./x\n  val: ~\n"
                "checkpoint:\neval:\n  every: \"7\"\nrun:\n  dir: 'runs/x y'\nmodel.channel_mult:\n  - 1\n  - 3\n",
                NO_SETS)) {
        CHECK(c.train.lr == 0.5f && c.model.channels == 16 && strcmp(c.model.bottleneck, "vq") == 0);
        CHECK(strcmp(c.data.train, "./x") == 0 && strcmp(c.data.val, "") == 0 && c.eval.every == 7);
        CHECK(strcmp(c.run.dir, "runs/x y") == 0 && c.model.n_levels == 2 && c.model.channel_mult[1] == 3);
        CHECK(c.checkpoint.keep == 3);
        rmx_config_free(&c);
    } else CHECK(!"loads");
}

/* ---------------------------------------------------------------------------------------------- */
/* Round trip                                                                                     */

/* Loads cfg->text back and expects the same config and the same text. */
static void check_round_trip(const rmx_config *c, const char *what) {
    rmx_config back;
    printf("check: %s\n", what);
    if (!load_ok(&back, c->text, NO_SETS)) {
        CHECK(!"the text loads");
        printf("%s", c->text);
        return;
    }
    CHECK(same_config(c, &back));
    CHECK(strcmp(c->text, back.text) == 0);
    rmx_config_free(&back);
}

static void run_roundtrip(void) {
    rmx_config c;
    if (!load_ok(&c, "", NO_SETS)) {
        CHECK(!"defaults load");
        return;
    }
    check_round_trip(&c, "the defaults' text loads back to the defaults");
    rmx_config_free(&c);

    /* Every key away from its default; strings with everything YAML would otherwise misread. */
    const char *yaml = "stage: vae\ndevice: cuda\n"
                       "data: {train: \"a \\\"quoted\\\" path: #hash\\\\back\\tslash\", val: '  lead, trail  '}\n"
                       "data.prefetch: 2\n"
                       "model:\n  channels: 12\n  channel_mult: [1, 3, 5, 7, 9, 11, 13, 15]\n  res_blocks: 3\n"
                       "  latent_channels: 5\n  bottleneck: vq\n  kl_weight: 3.3e-7\n  codebook_size: 77\n"
                       "  commitment: 0.1\n  ema_decay: 0.9999\n"
                       "train:\n  steps: 12345678901\n  global_batch: 96\n  micro_batch: 12\n  lr: 0.0003\n"
                       "  min_lr: 1.0e-5\n  warmup: 17\n  weight_decay: 0.01\n  beta1: 0.5\n  beta2: 0.9\n"
                       "  eps: 1e-6\n  grad_clip: 0\n  seed: 9876543210\n  threads: 6\n  max_nonfinite: 2\n"
                       "eval: {every: 0, batches: 3}\nlog: {every: 1}\nrun: {dir: \"/abs/run\"}\n"
                       "checkpoint: {dir: \"ck: pts\", every: 9, keep: 1, resume: \"null\"}\n";
    /* Via --set, characters a YAML file can only spell as escapes: U+0085 and U+2028 (line
     * breaks to YAML), a control character, and ordinary non-ASCII text. */
    if (!load_ok(&c, yaml, SETS("checkpoint.dir=x\xc2\x85y\xe2\x80\xa8z\x01 \xc3\xbc \xe6\x97\xa5\xf0\x9f\x8e\xb5"))) {
        CHECK(!"the full config loads");
        return;
    }
    CHECK(strcmp(c.data.train, "a \"quoted\" path: #hash\\back\tslash") == 0);
    CHECK(strcmp(c.data.val, "  lead, trail  ") == 0 && strcmp(c.checkpoint.resume, "null") == 0);
    check_round_trip(&c, "a config with every key changed loads back from its text");

    printf("check: --print-config output is a config that loads back to the same values\n");
    char *printed = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&printed, &len);
    rmx_config_print(&c, f);
    fclose(f);
    rmx_config back;
    if (load_ok(&back, printed, NO_SETS)) {
        CHECK(same_config(&c, &back));
        rmx_config_free(&back);
    } else CHECK(!"printed config loads");
    CHECK(strstr(printed, "  lr: 0.0003                        # peak learning rate (AdamW) [a number > 0]\n") != NULL);
    free(printed);

    /* Floats are written in their shortest exact form; check many bit patterns in [0, 1). */
    printf("check: 20000 float values survive text and back bit-exactly\n");
    uint32_t state = 12345, bad = 0;
    for (int i = 0; i < 20000; i++) {
        state = state * 1664525u + 1013904223u;
        float x = (float)(state >> 8) / 16777216.0f; /* [0, 1) */
        if (i % 2) x = ldexpf(x, -(int)(state % 40)); /* and small ones */
        c.model.ema_decay = x;
        char *text = rmx_config_to_yaml(&c);
        rmx_config r;
        if (!text || !load_ok(&r, text, NO_SETS)) {
            bad++;
        } else {
            bad += memcmp(&r.model.ema_decay, &x, sizeof x) != 0;
            rmx_config_free(&r);
        }
        free(text);
    }
    CHECK(bad == 0);
    rmx_config_free(&c);

    /* A diffusion config: its own sections away from their defaults; the autoencoder's are left
     * out of its text (they belong to stage vae) and load back as defaults. */
    const char *diffusion = "stage: diffusion\nautoencoder: {checkpoint: \"runs/a b/ckpt-00000150.h5\"}\n"
                            "dit: {hidden: 96, depth: 3, heads: 4, patch: 1, mlp_ratio: 2.5}\n"
                            "diffusion: {timesteps: 500, beta_start: 0.00085, beta_end: 0.012, label_drop: 0.2,\n"
                            "  ema_decay: 0.999, latent_samples: 32, sample_steps: 20, cfg_scale: 2.5,\n"
                            "  eval_timesteps: 5}\n";
    if (!load_ok(&c, diffusion, NO_SETS)) {
        CHECK(!"the diffusion config loads");
        return;
    }
    CHECK(c.dit.hidden == 96 && c.dit.patch == 1 && c.dit.mlp_ratio == 2.5f && c.diffusion.timesteps == 500);
    CHECK(strstr(c.text, "model:") == NULL && strstr(c.text, "dit:") != NULL);
    check_round_trip(&c, "a diffusion config loads back from its text, without the vae's sections");
    rmx_config_free(&c);
}

/* ---------------------------------------------------------------------------------------------- */
/* The shipped config files                                                                       */

static void run_files(const char *dir) {
    char pattern[1100];
    glob_t g;
    snprintf(pattern, sizeof pattern, "%s/*.yaml", dir);
    if (glob(pattern, 0, NULL, &g) != 0) {
        CHECK(!"configs/*.yaml matches files");
        return;
    }
    printf("check: at least the three shipped configs are present (%zu found)\n", g.gl_pathc);
    CHECK(g.gl_pathc >= 3);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        const char *path = g.gl_pathv[i], *base = strrchr(path, '/') + 1;
        rmx_config c;
        char err[2048];
        printf("check: %s loads without error\n", base);
        if (rmx_config_load(&c, path, NULL, 0, err, sizeof err) != 0) {
            CHECK(!"loads");
            printf("    %s\n", err);
            continue;
        }
        check_round_trip(&c, "  and its resolved text loads back to the same config");
        if (strcmp(base, "demo-vae.yaml") == 0) {
            CHECK(strcmp(c.stage, "vae") == 0 && strcmp(c.data.train, "demo-data/train") == 0);
            CHECK(strcmp(c.data.val, "demo-data/val") == 0 && strcmp(c.run.dir, "runs/demo-vae") == 0);
            CHECK(c.train.global_batch == 8 && c.train.micro_batch == 4);
        } else if (strcmp(base, "vqvae.yaml") == 0) {
            CHECK(strcmp(c.stage, "vae") == 0 && strcmp(c.model.bottleneck, "vq") == 0);
            CHECK(c.model.channels == 32 && c.model.n_levels == 3 && c.model.latent_channels == 8);
            CHECK(c.train.global_batch == 64 && c.train.micro_batch == 8 && c.train.steps == 100000);
        } else if (strcmp(base, "bench-vae.yaml") == 0) {
            CHECK(strcmp(c.model.bottleneck, "kl") == 0 && c.model.channels == 32 && c.model.n_levels == 3);
            CHECK(c.model.channel_mult[2] == 4 && c.model.res_blocks == 1 && c.model.latent_channels == 8);
            CHECK(c.train.global_batch == 8 && c.train.micro_batch == 8);
        }
        rmx_config_free(&c);
    }
    globfree(&g);
}

int main(int argc, char **argv) {
    const char *group = argc > 1 ? argv[1] : "";
    if (strcmp(group, "errors") == 0)
        run_errors();
    else if (strcmp(group, "defaults") == 0)
        run_defaults();
    else if (strcmp(group, "overrides") == 0)
        run_overrides();
    else if (strcmp(group, "roundtrip") == 0)
        run_roundtrip();
    else if (strcmp(group, "files") == 0 && argc > 2)
        run_files(argv[2]);
    else {
        fprintf(stderr, "usage: test_config errors|defaults|overrides|roundtrip|files CONFIG_DIR\n");
        return 2;
    }
    printf("%s: %d failure(s)\n", group, g_failures);
    return g_failures ? 1 : 0;
}
