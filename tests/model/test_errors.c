/* Configuration errors of the architecture: exact messages naming the config keys. */
#include "model_test.h"

static void expect_error(const rmx_ae_hparams *hp, const char *want) {
    char err[256] = "";
    int rc = rmx_ae_validate(hp, err, sizeof err);
    CHECK(rc == -1, "validate accepted what should fail with: %s", want);
    CHECK(strcmp(err, want) == 0, "message\n  got:  %s\n  want: %s", err, want);
}

int main(void) {
    rmx_ae_hparams hp;
    rmx_ae_hparams_default(&hp);
    char err[256] = "";
    CHECK(rmx_ae_validate(&hp, err, sizeof err) == 0, "the bench size is valid: %s", err);

    hp.frames = 250;
    expect_error(&hp, "model.channel_mult has 3 levels, so the input (128 x 250) must be divisible "
                      "by 4 in both dimensions; 250 is not");
    /* create refuses with the same message and allocates nothing */
    rmx_backend *be = rmx_backend_ref_create();
    err[0] = '\0';
    CHECK(rmx_ae_create(be, &hp, 1, err, sizeof err) == NULL, "create accepted 128 x 250");
    CHECK(strstr(err, "250 is not") != NULL, "create's message: %s", err);
    be->destroy(be);

    rmx_ae_hparams_default(&hp);
    hp.mels = 100;
    hp.channel_mult[3] = 8;
    hp.n_levels = 4;
    expect_error(&hp, "model.channel_mult has 4 levels, so the input (100 x 256) must be divisible "
                      "by 8 in both dimensions; 100 is not");

    rmx_ae_hparams_default(&hp);
    hp.channels = 12;
    expect_error(&hp, "model.channels x model.channel_mult[0] = 12 channels cannot be split into "
                      "GroupNorm's 8 groups; use a multiple of 8");

    rmx_ae_hparams_default(&hp);
    hp.res_blocks = 0;
    expect_error(&hp, "model.res_blocks must be at least 1, got 0");

    rmx_ae_hparams_default(&hp);
    hp.n_levels = 0;
    expect_error(&hp, "model.channel_mult must have 1 to 8 entries, got 0");

    rmx_ae_hparams_default(&hp);
    hp.bottleneck = RMX_AE_VQ;
    hp.ema_decay = 1.0f;
    expect_error(&hp, "model.ema_decay must lie in (0, 1), got 1");

    /* One level needs no divisibility at all. */
    rmx_ae_hparams_default(&hp);
    hp.n_levels = 1;
    hp.mels = 7;
    hp.frames = 9;
    CHECK(rmx_ae_validate(&hp, err, sizeof err) == 0, "one level fits any size: %s", err);
    return test_finish("model_errors");
}
