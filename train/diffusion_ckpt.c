/* Stage-2 and stage-3 checkpoints opened as models (train/diffusion_ckpt.h). */
#include "train/diffusion_ckpt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/exitcodes.h"
#include "util/log.h"

/* The stage, the step, the run's config and the stage-2 config that fixes the transformer. */
static int read_configs(rmx_diffusion_ckpt *d, rmx_ckpt_reader *r, rmx_dit_mode mode, char *err, size_t errlen) {
    snprintf(d->stage, sizeof d->stage, "%s", rmx_ckpt_reader_stage(r));
    const int stage3 = strcmp(d->stage, "remix") == 0;
    const char *want = mode == RMX_DIT_REMIX ? "remix" : "diffusion";
    if (strcmp(d->stage, want) != 0) {
        if (mode == RMX_DIT_REMIX)
            return rmx_seterr(err, errlen,
                              "%s is a checkpoint of stage %s; remixing needs a stage-3 (remix) checkpoint, as "
                              "remixer-train writes for configs/remix.yaml%s",
                              d->path, d->stage,
                              strcmp(d->stage, "diffusion") == 0 ? " (a stage-2 transformer has no trained style part)"
                                                                 : "");
        return rmx_seterr(err, errlen,
                          "%s is a checkpoint of stage %s; this needs a stage-2 (diffusion) checkpoint, as "
                          "remixer-train writes for configs/diffusion.yaml%s",
                          d->path, d->stage,
                          stage3 ? " (a remix checkpoint's /diffusion source attribute names the one it started from;"
                                   " a remix run resumes from its own run folder)"
                                 : "");
    }
    if (rmx_ckpt_get_i64(r, "", "step", &d->step, err, errlen) != 0) return -1;
    char name[RMX_PATH_MAX + 64], why[2048];
    char *text = rmx_ckpt_get_str(r, "", "config", err, errlen);
    if (!text) return -1;
    snprintf(name, sizeof name, "%s (its config attribute)", d->path);
    int rc = rmx_config_load_string(&d->cfg, name, text, NULL, 0, why, sizeof why);
    if (rc != 0) {
        free(text);
        return rmx_seterr(err, errlen, "%s", why);
    }
    if (stage3) {
        free(text);
        text = rmx_ckpt_get_str(r, "diffusion", "config", err, errlen);
        if (!text) return -1;
        char *source = rmx_ckpt_get_str(r, "diffusion", "source", err, errlen);
        if (!source || rmx_ckpt_get_i64(r, "diffusion", "step", &d->dit_step, err, errlen) != 0) {
            free(source);
            free(text);
            return -1;
        }
        snprintf(d->dit_source, sizeof d->dit_source, "%s", source);
        free(source);
        snprintf(name, sizeof name, "%s (its /diffusion config attribute)", d->path);
    } else {
        snprintf(d->dit_source, sizeof d->dit_source, "%s", d->path);
        d->dit_step = d->step;
    }
    rc = rmx_config_load_string(&d->dit_cfg, name, text, NULL, 0, why, sizeof why);
    d->dit_cfg_text = text;
    return rc == 0 ? 0 : rmx_seterr(err, errlen, "%s", why);
}

static rmx_dit *create_dit(rmx_diffusion_ckpt *d, rmx_backend *be, int micro_batch, int style, uint64_t seed,
                           char *err, size_t errlen) {
    const rmx_config *c = &d->dit_cfg;
    rmx_dit_hparams hp;
    rmx_dit_hparams_default(&hp);
    rmx_ae_latent_shape(d->fae.ae, &hp.in_channels, &hp.height, &hp.width);
    hp.patch = c->dit.patch;
    hp.hidden = c->dit.hidden;
    hp.depth = c->dit.depth;
    hp.heads = c->dit.heads;
    hp.mlp_ratio = c->dit.mlp_ratio;
    hp.num_classes = d->fae.audio.n_genres;
    hp.micro_batch = micro_batch;
    hp.style = style;
    char why[1024];
    rmx_dit *dit = rmx_dit_create(be, &hp, seed, why, sizeof why);
    if (!dit) rmx_seterr(err, errlen, "%s: %s", d->path, why);
    return dit;
}

/* /ema into `dit` and /diffusion/latent_scale into d. */
static int load_ema(rmx_diffusion_ckpt *d, rmx_ckpt_reader *r, rmx_dit *dit, char *err, size_t errlen) {
    rmx_params scale;
    rmx_params_init(&scale, rmx_ae_backend(d->fae.ae), 0, 0);
    int64_t one = 1;
    rmx_params_add(&scale, "latent_scale", 1, &one, RMX_INIT_CONST, 1.0f);
    rmx_params_finalize(&scale);
    rmx_ckpt_layout layout = {0};
    rmx_ckpt_layout_add(&layout, "ema", rmx_dit_params(dit), 0);
    rmx_ckpt_layout_add(&layout, "ema", rmx_dit_state(dit), 0);
    rmx_ckpt_layout_add(&layout, "diffusion", &scale, 0);
    char why[2048];
    rmx_ckpt_status st = rmx_ckpt_load(r, &layout, why, sizeof why);
    int rc = 0;
    if (st == RMX_CKPT_DAMAGED) rc = rmx_seterr(err, errlen, "%s is damaged: %s", d->path, why);
    else if (st == RMX_CKPT_REFUSED) rc = rmx_seterr(err, errlen, "%s", why);
    rmx_backend *be = scale.be;
    if (rc == 0) be->to_host(be, &d->latent_scale, scale.data, sizeof(float));
    rmx_params_free(&scale);
    if (rc == 0 && !(d->latent_scale > 0 && isfinite(d->latent_scale)))
        rc = rmx_seterr(err, errlen, "%s: /diffusion/latent_scale is %g", d->path, d->latent_scale);
    return rc;
}

/* Every tensor of `from` into the tensor of the same name in `to` (values; the EMA buffer too
 * when `to` has one). */
static void copy_by_name(rmx_backend *be, const rmx_params *from, rmx_params *to) {
    for (int i = 0; i < from->count; i++) {
        const rmx_param_info *src = rmx_params_get(from, i);
        int j = rmx_params_find(to, src->name);
        if (j < 0 || rmx_params_get(to, j)->numel != src->numel) continue;
        be->copy(be, rmx_params_data(to, j), rmx_params_data(from, i), sizeof(float) * src->numel);
        if (to->ema) be->copy(be, rmx_params_ema(to, j), rmx_params_data(from, i), sizeof(float) * src->numel);
    }
}

/* A stage-2 transformer extended with style tokens: its EMA weights, a fresh style part. */
static int load_extended(rmx_diffusion_ckpt *d, rmx_ckpt_reader *r, rmx_backend *be, int micro_batch,
                         uint64_t seed, char *err, size_t errlen) {
    rmx_dit *plain = create_dit(d, be, 1, 0, 0, err, errlen);
    if (!plain) return -1;
    int rc = load_ema(d, r, plain, err, errlen);
    if (rc == 0) {
        d->dit = create_dit(d, be, micro_batch, 1, seed, err, errlen);
        if (!d->dit) rc = -1;
    }
    if (rc == 0) {
        copy_by_name(be, rmx_dit_params(plain), rmx_dit_params(d->dit));
        copy_by_name(be, rmx_dit_state(plain), rmx_dit_state(d->dit));
        rmx_dit_copy_style_embedder_from_x(d->dit);
    }
    rmx_dit_free(plain);
    return rc;
}

int rmx_diffusion_ckpt_load(rmx_backend *be, const char *path, int micro_batch, rmx_dit_mode mode,
                            uint64_t init_seed, rmx_diffusion_ckpt *d, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    snprintf(d->path, sizeof d->path, "%s", path);
    rmx_ckpt_reader *r = rmx_ckpt_open(path, err, errlen);
    if (!r) return RMX_EXIT_CHECKPOINT;
    int rc = read_configs(d, r, mode, err, errlen);
    if (rc == 0 && rmx_frozen_ae_load(be, path, micro_batch, &d->fae, err, errlen) != RMX_EXIT_OK) rc = -1;
    if (rc == 0 && mode == RMX_DIT_EXTEND) {
        rc = load_extended(d, r, be, micro_batch, init_seed, err, errlen);
    } else if (rc == 0) {
        d->dit = create_dit(d, be, micro_batch, mode == RMX_DIT_REMIX, init_seed, err, errlen);
        rc = d->dit ? load_ema(d, r, d->dit, err, errlen) : -1;
    }
    if (rc == 0 && rmx_noise_schedule_linear(&d->sched, d->dit_cfg.diffusion.timesteps,
                                             d->dit_cfg.diffusion.beta_start, d->dit_cfg.diffusion.beta_end) != 0)
        rc = rmx_seterr(err, errlen, "%s: its diffusion schedule is not valid", path);
    rmx_ckpt_close(r);
    if (rc != 0) {
        rmx_diffusion_ckpt_free(d);
        return RMX_EXIT_CHECKPOINT;
    }
    return RMX_EXIT_OK;
}

void rmx_diffusion_ckpt_free(rmx_diffusion_ckpt *d) {
    if (d->dit) rmx_dit_free(d->dit);
    rmx_frozen_ae_free(&d->fae);
    rmx_noise_schedule_free(&d->sched);
    rmx_config_free(&d->cfg);
    rmx_config_free(&d->dit_cfg);
    free(d->dit_cfg_text);
    memset(d, 0, sizeof *d);
}

void rmx_diffusion_layout_schedule(rmx_ckpt_layout *layout, const rmx_config *c, rmx_params *scale_reg) {
    rmx_ckpt_layout_add(layout, "diffusion", scale_reg, 0);
    rmx_ckpt_layout_attr_i64(layout, "diffusion", "timesteps", c->diffusion.timesteps);
    rmx_ckpt_layout_attr_f64(layout, "diffusion", "beta_start", c->diffusion.beta_start);
    rmx_ckpt_layout_attr_f64(layout, "diffusion", "beta_end", c->diffusion.beta_end);
    rmx_ckpt_layout_attr_str(layout, "diffusion", "prediction", "epsilon");
}

void rmx_diffusion_ckpt_layout(rmx_diffusion_ckpt *d, rmx_params *scale_reg, rmx_ckpt_layout *layout) {
    rmx_diffusion_layout_schedule(layout, &d->dit_cfg, scale_reg);
    rmx_ckpt_layout_attr_str(layout, "diffusion", "config", d->dit_cfg_text);
    rmx_ckpt_layout_attr_str(layout, "diffusion", "source", d->dit_source);
    rmx_ckpt_layout_attr_i64(layout, "diffusion", "step", d->dit_step);
}
