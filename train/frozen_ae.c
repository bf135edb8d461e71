/* A frozen autoencoder from a checkpoint (train/frozen_ae.h). */
#include "train/frozen_ae.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/stage.h"
#include "util/exitcodes.h"
#include "util/log.h"

/* Where the weights and the architecture of the autoencoder are in a checkpoint of `stage`. */
static int locate(rmx_ckpt_reader *r, const char **group, const char **config_group, char *err, size_t errlen) {
    const char *stage = rmx_ckpt_reader_stage(r);
    if (strcmp(stage, "vae") == 0) {
        *group = "model";
        *config_group = "";
        return 0;
    }
    if (rmx_ckpt_has_group(r, "autoencoder")) {
        *group = "autoencoder";
        *config_group = "autoencoder";
        return 0;
    }
    return rmx_seterr(err, errlen, "%s: a checkpoint of stage '%s' without an autoencoder (/autoencoder)",
                      rmx_ckpt_reader_path(r), stage);
}

/* The architecture: the stage-1 config's model.* keys, the input size of the data. */
static int architecture(rmx_frozen_ae *f, const char *path, int micro_batch, char *err, size_t errlen) {
    rmx_config cfg;
    char why[2048], name[RMX_PATH_MAX + 32];
    snprintf(name, sizeof name, "%s (its config attribute)", path);
    if (rmx_config_load_string(&cfg, name, f->config, NULL, 0, why, sizeof why) != 0)
        return rmx_seterr(err, errlen, "%s", why);
    if (strcmp(cfg.stage, "vae") != 0) {
        rmx_config_free(&cfg);
        return rmx_seterr(err, errlen, "%s: its autoencoder's config is of stage '%s', not vae", path, cfg.stage);
    }
    rmx_ae_hparams_from_config(&cfg, &f->audio, &f->hp);
    f->hp.micro_batch = micro_batch;
    rmx_config_free(&cfg);
    if (rmx_ae_validate(&f->hp, why, sizeof why) != 0) return rmx_seterr(err, errlen, "%s: %s", path, why);
    return 0;
}

static int read_description(rmx_frozen_ae *f, rmx_ckpt_reader *r, const char *config_group, int micro_batch,
                            char *err, size_t errlen) {
    const char *path = rmx_ckpt_reader_path(r);
    if (rmx_ckpt_get_audio(r, "audio", &f->audio, err, errlen) != 0) return -1;
    f->config = rmx_ckpt_get_str(r, config_group, "config", err, errlen);
    if (!f->config) return -1;
    if (!config_group[0]) {
        snprintf(f->source, sizeof f->source, "%s", path);
        if (rmx_ckpt_get_i64(r, "", "step", &f->step, err, errlen) != 0) return -1;
    } else {
        char *source = rmx_ckpt_get_str(r, config_group, "source", err, errlen);
        if (!source) return -1;
        snprintf(f->source, sizeof f->source, "%s", source);
        free(source);
        if (rmx_ckpt_get_i64(r, config_group, "step", &f->step, err, errlen) != 0) return -1;
    }
    return architecture(f, path, micro_batch, err, errlen);
}

static int load(rmx_backend *be, const char *path, int micro_batch, int stage1_only, rmx_frozen_ae *out,
                char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    rmx_ckpt_reader *r = rmx_ckpt_open(path, err, errlen);
    if (!r) return RMX_EXIT_CHECKPOINT;
    const char *group = NULL, *config_group = NULL;
    int rc = 0;
    if (stage1_only && strcmp(rmx_ckpt_reader_stage(r), "vae") != 0)
        rc = rmx_seterr(err, errlen, "%s is a checkpoint of stage %s; autoencoder.checkpoint needs a stage-1 (vae) "
                        "checkpoint",
                        path, rmx_ckpt_reader_stage(r));
    if (rc == 0) rc = locate(r, &group, &config_group, err, errlen);
    if (rc == 0) rc = read_description(out, r, config_group, micro_batch, err, errlen);
    if (rc == 0 && !(out->ae = rmx_ae_create_frozen(be, &out->hp, err, errlen))) rc = -1;
    if (rc == 0) {
        rmx_ckpt_layout layout = {0};
        rmx_ckpt_layout_add(&layout, group, rmx_ae_params(out->ae), 0);
        rmx_ckpt_layout_add(&layout, group, rmx_ae_state(out->ae), 0);
        char why[2048];
        rmx_ckpt_status s = rmx_ckpt_load(r, &layout, why, sizeof why);
        if (s == RMX_CKPT_DAMAGED) rc = rmx_seterr(err, errlen, "%s is damaged: %s", path, why);
        else if (s == RMX_CKPT_REFUSED) rc = rmx_seterr(err, errlen, "%s", why);
    }
    rmx_ckpt_close(r);
    if (rc != 0) {
        rmx_frozen_ae_free(out);
        return RMX_EXIT_CHECKPOINT;
    }
    return RMX_EXIT_OK;
}

int rmx_frozen_ae_load(rmx_backend *be, const char *path, int micro_batch, rmx_frozen_ae *out, char *err,
                       size_t errlen) {
    return load(be, path, micro_batch, 0, out, err, errlen);
}

int rmx_frozen_ae_load_stage1(rmx_backend *be, const char *path, int micro_batch, rmx_frozen_ae *out,
                              char *err, size_t errlen) {
    return load(be, path, micro_batch, 1, out, err, errlen);
}

void rmx_frozen_ae_layout(rmx_frozen_ae *f, rmx_ckpt_layout *layout) {
    rmx_ckpt_layout_add(layout, "autoencoder", rmx_ae_params(f->ae), 0);
    rmx_ckpt_layout_add(layout, "autoencoder", rmx_ae_state(f->ae), 0);
    rmx_ckpt_layout_attr_str(layout, "autoencoder", "config", f->config);
    rmx_ckpt_layout_attr_str(layout, "autoencoder", "source", f->source);
    rmx_ckpt_layout_attr_i64(layout, "autoencoder", "step", f->step);
    rmx_ckpt_layout_audio(layout, "audio", &f->audio);
}

int rmx_frozen_ae_compare(rmx_frozen_ae *f, float *const values[2], const char *what, char *err,
                          size_t errlen) {
    rmx_params *regs[2] = {rmx_ae_params(f->ae), rmx_ae_state(f->ae)};
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        rmx_params *p = regs[i];
        if (p->count == 0) continue;
        float *now = malloc(p->span * sizeof(float));
        if (!now) return rmx_seterr(err, errlen, "out of memory");
        p->be->to_host(p->be, now, p->data, p->span * sizeof(float));
        for (int t = 0; t < p->count && rc == 0; t++) {
            const rmx_param_info *info = rmx_params_get(p, t);
            if (memcmp(now + info->offset, values[i] + info->offset, info->numel * sizeof(float)) != 0)
                rc = rmx_seterr(err, errlen, "%s: its %s differs", what, info->name);
        }
        free(now);
    }
    return rc;
}

void rmx_frozen_ae_free(rmx_frozen_ae *f) {
    if (f->ae) rmx_ae_free(f->ae);
    free(f->config);
    memset(f, 0, sizeof *f);
}

int rmx_frozen_ae_check_data(const rmx_frozen_ae *f, const rmx_mel_params *data, const char *data_path,
                             const char *config_path, const char *ckpt_key, const char *ckpt, char *err,
                             size_t errlen) {
    char why[1024], name[RMX_PATH_MAX + 64];
    snprintf(name, sizeof name, "the autoencoder's data (%s)", ckpt);
    if (rmx_mel_params_compare(data, data_path, &f->audio, name, why, sizeof why) == 0) return 0;
    return rmx_seterr(err, errlen,
                      "%s: data.train does not match the autoencoder: %s (the autoencoder, from %s, only "
                      "understands spectrograms prepared like its own data)",
                      config_path, why, ckpt_key);
}

void rmx_frozen_ae_scaled_latents(rmx_frozen_ae *f, int n, const float *x, float scale, float *out) {
    rmx_backend *be = rmx_ae_backend(f->ae);
    int c, h, w;
    rmx_ae_latent_shape(f->ae, &c, &h, &w);
    const size_t count = (size_t)n * c * h * w;
    be->copy(be, out, rmx_ae_latents(f->ae, n, x), sizeof(float) * count);
    be->scale(be, count, scale, out);
}

void rmx_frozen_ae_snapshot(rmx_frozen_ae *f, float *values[2]) {
    rmx_params *regs[2] = {rmx_ae_params(f->ae), rmx_ae_state(f->ae)};
    for (int i = 0; i < 2; i++) {
        values[i] = calloc(regs[i]->span + 1, sizeof(float));
        if (!values[i]) {
            fprintf(stderr, "remixer: out of host memory\n");
            abort();
        }
        if (regs[i]->span) regs[i]->be->to_host(regs[i]->be, values[i], regs[i]->data, regs[i]->span * sizeof(float));
    }
}
