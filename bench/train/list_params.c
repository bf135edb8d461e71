/* list_params: the autoencoder's parameter names and shapes, one "name [d0, d1, ...]" line per
 * tensor in registration order (the trained registry, then the vq state), for the configuration
 * given on the command line (default: the brief's bench size). The PyTorch twin (ae_twin.py) must
 * produce exactly these state_dict keys and shapes.
 *
 * With --dump DIR it also runs one training forward/backward on a random batch and writes, as raw
 * little-endian float32, tensors in registration order without the registry's padding:
 *   params.f32  every tensor's values (trained, then state)
 *   grads.f32   the trained tensors' gradients
 *   x.f32       the input [B, 1, M, T];  dx.f32  d total / d x
 *   eps.f32     the kl noise [B, latent, h, w] the step used (kl only)
 *   loss.txt    "rec kl commit total"
 * check_twin.py feeds the same weights, input and noise to the twin and compares. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "model/autoencoder.h"
#include "util/rng.h"

#define DUMP_SEED 1234u
#define DUMP_STEP 3

static void usage(void) {
    fprintf(stderr,
            "usage: list_params [--channels C] [--mult 1,2,4] [--res-blocks R] [--latent L]\n"
            "                   [--bottleneck kl|vq] [--kl-weight W] [--codebook K] [--size MxT]\n"
            "                   [--batch B] [--backend cpu|ref] [--threads N] [--dump DIR]\n");
    exit(2);
}

static int parse_mult(const char *s, rmx_ae_hparams *hp) {
    int n = 0;
    while (*s && n < RMX_AE_MAX_LEVELS) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) return -1;
        hp->channel_mult[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    hp->n_levels = n;
    return *s ? -1 : 0;
}

static void write_file(const char *dir, const char *name, const void *data, size_t bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, bytes, f) != bytes || fclose(f) != 0) {
        fprintf(stderr, "list_params: cannot write %s\n", path);
        exit(1);
    }
}

/* Writes the tensors of a registry (values, or gradients when grads is set) back to back. */
static void append_registry(rmx_backend *be, const rmx_params *p, int grads, FILE *f) {
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *t = rmx_params_get(p, i);
        float *host = malloc(t->numel * sizeof *host);
        if (!host) exit(1);
        be->to_host(be, host, grads ? rmx_params_grad(p, i) : rmx_params_data(p, i),
                    t->numel * sizeof *host);
        if (fwrite(host, sizeof *host, t->numel, f) != t->numel) exit(1);
        free(host);
    }
}

static void write_registries(rmx_backend *be, const char *dir, const char *name,
                             const rmx_params *a, const rmx_params *b, int grads) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "list_params: cannot write %s\n", path);
        exit(1);
    }
    append_registry(be, a, grads, f);
    if (b) append_registry(be, b, grads, f);
    if (fclose(f) != 0) exit(1);
}

static void dump(rmx_backend *be, rmx_ae *ae, const rmx_ae_hparams *hp, const char *dir) {
    int n = hp->micro_batch, lc, lh, lw;
    rmx_ae_latent_shape(ae, &lc, &lh, &lw);
    size_t per_x = (size_t)hp->mels * hp->frames, nx = (size_t)n * per_x;
    size_t per_z = (size_t)lc * lh * lw, nz = (size_t)n * per_z;
    float *hx = malloc(nx * sizeof *hx), *heps = malloc(nz * sizeof *heps);
    int64_t *index = malloc((size_t)n * sizeof *index);
    if (!hx || !heps || !index) exit(1);
    for (size_t i = 0; i < nx; i++)
        hx[i] = rmx_normal(DUMP_SEED, RMX_RNG_DEMO, 0, i / per_x, (uint32_t)(i % per_x));
    for (int i = 0; i < n; i++) index[i] = 100 + i;

    float *x = be->alloc(be, nx * sizeof *x), *dx = be->alloc(be, nx * sizeof *dx);
    float *terms = be->alloc(be, RMX_AE_N_LOSS * sizeof *terms);
    be->to_backend(be, x, hx, nx * sizeof *x);
    rmx_ae_step_begin(ae);
    rmx_ae_forward_backward(ae, n, x, dx, index, DUMP_SEED, DUMP_STEP, 1.0f / (float)n, terms);

    float ht[RMX_AE_N_LOSS];
    be->to_host(be, ht, terms, sizeof ht);
    char line[256];
    int len = snprintf(line, sizeof line, "%.9g %.9g %.9g %.9g\n", ht[RMX_AE_LOSS_REC],
                       ht[RMX_AE_LOSS_KL], ht[RMX_AE_LOSS_COMMIT], rmx_ae_total_loss(hp, ht));
    write_file(dir, "loss.txt", line, (size_t)len);
    write_file(dir, "x.f32", hx, nx * sizeof *hx);
    be->to_host(be, hx, dx, nx * sizeof *hx);
    write_file(dir, "dx.f32", hx, nx * sizeof *hx);
    if (hp->bottleneck == RMX_AE_KL) {
        /* The noise forward_backward drew: the same counter-based stream, asked again. */
        float *eps = be->alloc(be, nz * sizeof *eps);
        be->randn(be, eps, n, per_z, DUMP_SEED, RMX_RNG_LATENT, DUMP_STEP, index);
        be->to_host(be, heps, eps, nz * sizeof *heps);
        write_file(dir, "eps.f32", heps, nz * sizeof *heps);
        be->free(be, eps);
    }
    write_registries(be, dir, "params.f32", rmx_ae_params(ae), rmx_ae_state(ae), 0);
    write_registries(be, dir, "grads.f32", rmx_ae_params(ae), NULL, 1);
    be->free(be, x);
    be->free(be, dx);
    be->free(be, terms);
    free(hx);
    free(heps);
    free(index);
}

int main(int argc, char **argv) {
    rmx_ae_hparams hp;
    rmx_ae_hparams_default(&hp);
    const char *dir = NULL, *backend = "cpu";
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        i++;
        if (!strcmp(a, "--channels")) hp.channels = atoi(v);
        else if (!strcmp(a, "--mult")) {
            if (parse_mult(v, &hp) != 0) usage();
        } else if (!strcmp(a, "--res-blocks")) hp.res_blocks = atoi(v);
        else if (!strcmp(a, "--latent")) hp.latent_channels = atoi(v);
        else if (!strcmp(a, "--bottleneck")) {
            if (!strcmp(v, "kl")) hp.bottleneck = RMX_AE_KL;
            else if (!strcmp(v, "vq")) hp.bottleneck = RMX_AE_VQ;
            else usage();
        } else if (!strcmp(a, "--kl-weight")) hp.kl_weight = (float)atof(v);
        else if (!strcmp(a, "--codebook")) hp.codebook_size = atoi(v);
        else if (!strcmp(a, "--size")) {
            if (sscanf(v, "%dx%d", &hp.mels, &hp.frames) != 2) usage();
        } else if (!strcmp(a, "--batch")) hp.micro_batch = atoi(v);
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--dump")) dir = v;
        else usage();
    }
    rmx_backend *be = !strcmp(backend, "ref") ? rmx_backend_ref_create()
                      : !strcmp(backend, "cpu") ? rmx_backend_cpu_create(threads)
                                                : NULL;
    if (!be) usage();
    char err[512];
    rmx_ae *ae = rmx_ae_create(be, &hp, 7, err, sizeof err);
    if (!ae) {
        fprintf(stderr, "list_params: %s\n", err);
        return 1;
    }
    const rmx_params *regs[2] = {rmx_ae_params(ae), rmx_ae_state(ae)};
    char buf[256];
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < regs[r]->count; i++)
            printf("%s\n", rmx_params_describe(regs[r], i, buf, sizeof buf));
    if (dir) dump(be, ae, &hp, dir);
    rmx_ae_free(ae);
    be->destroy(be);
    return 0;
}
