/* The autoencoder against its PyTorch twin, without torch: reference cases written once by
 * bench/train/make_ae_reference.py (tests/model/ref/ae_kl.h5 and ae_vq.h5 are committed; where
 * torch is installed, bench_twin_matches makes fresh ones and runs this test on them) are read
 * with the HDF5 C library, and on the ref and cpu backends:
 *   - the registries' names, shapes and order equal the twin's state_dict (the trained registry,
 *     then the vq state);
 *   - the latent noise the backend draws for (seed, RMX_RNG_LATENT, step, sample index) equals the
 *     file's, which the generator computed with its own Philox4x32-10 (kl);
 *   - with the twin's weights loaded by name and one rmx_ae_forward_backward (loss scale 1 / B):
 *     the loss terms and the total, the nearest codes (vq, exactly), every parameter gradient and
 *     d total / d x;
 *   - one AdamW step of the backend over the flat buffers (lr, betas, eps and weight decay from
 *     the file, t = 1) gives the twin's weights (kl; both: the vq state is left alone).
 * The twin computed in float64; differences are Remixer's float32 error. Tolerances (normwise:
 * max |ours - twin| / max |twin| per tensor): loss terms, every gradient and the input gradient
 * 1e-5 (the ref backend lands near 1e-7). Structurally zero gradients: with one channel per
 * GroupNorm group (C 4, and C 8 at the first level), a per-channel constant added before a
 * GroupNorm is removed by it, so the biases feeding one have a true gradient of 0; the twin holds
 * ~1e-17 of the largest gradient, float32 ~1e-8: for tensors whose twin gradient is below 1e-9
 * of the largest, ours must stay below 1e-5 of the largest. Updated weights within 1e-3 lr + 1e-6
 * of the twin's (AdamW's first step is about lr sign(g), insensitive to the gradient's error
 * except where |g| is within that error of 0: such elements, and those of structurally zero
 * tensors, are counted and exempt).
 *
 * usage: test_ae_reference FILE.h5... */
#include <hdf5.h>

#include "model_test.h"

#define TOL_LOSS 1e-5
#define TOL_GRAD 1e-5
#define TOL_EPS 1e-5      /* the noise: float32 libm (C) against numpy's float32 math, ~1 ulp */
#define ZERO_GRAD 1e-9    /* a twin gradient below this share of the largest is structurally 0 */

typedef struct {
    hid_t file;
    const char *path;
} h5ref;

static int h5_exists(h5ref *r, const char *path) { return H5Lexists(r->file, path, H5P_DEFAULT) > 0; }

static hid_t open_attr(h5ref *r, const char *name) {
    hid_t a = H5Aexists(r->file, name) > 0 ? H5Aopen(r->file, name, H5P_DEFAULT) : -1;
    if (a < 0) {
        fprintf(stderr, "%s: attribute %s missing\n", r->path, name);
        exit(1);
    }
    return a;
}

/* A numeric attribute (converted by HDF5); `count` values. */
static void attr_values(h5ref *r, const char *name, hid_t type, void *out, size_t count) {
    hid_t a = open_attr(r, name), space = H5Aget_space(a);
    if ((size_t)H5Sget_simple_extent_npoints(space) != count || H5Aread(a, type, out) < 0) {
        fprintf(stderr, "%s: attribute %s: expected %zu value(s)\n", r->path, name, count);
        exit(1);
    }
    H5Sclose(space);
    H5Aclose(a);
}

static double attr_double(h5ref *r, const char *name) {
    double v;
    attr_values(r, name, H5T_NATIVE_DOUBLE, &v, 1);
    return v;
}

static int attr_int(h5ref *r, const char *name) { return (int)attr_double(r, name); }

static uint64_t attr_u64(h5ref *r, const char *name) {
    unsigned long long v;
    attr_values(r, name, H5T_NATIVE_ULLONG, &v, 1);
    return (uint64_t)v;
}

/* A string attribute (h5py writes variable-length UTF-8) into buf. */
static void attr_string(h5ref *r, const char *name, char *buf, size_t len) {
    hid_t a = open_attr(r, name), type = H5Aget_type(a), mem = H5Tcopy(H5T_C_S1);
    int ok = H5Tget_class(type) == H5T_STRING;
    if (ok && H5Tis_variable_str(type) > 0) {
        char *s = NULL;
        H5Tset_size(mem, H5T_VARIABLE);
        H5Tset_cset(mem, H5Tget_cset(type));
        ok = H5Aread(a, mem, &s) >= 0 && s;
        if (ok) snprintf(buf, len, "%s", s);
        H5free_memory(s);
    } else if (ok) {
        size_t width = H5Tget_size(type);
        char *s = calloc(width + 1, 1);
        H5Tset_size(mem, width);
        ok = H5Aread(a, mem, s) >= 0;
        snprintf(buf, len, "%s", s);
        free(s);
    }
    if (!ok) {
        fprintf(stderr, "%s: attribute %s is not a string\n", r->path, name);
        exit(1);
    }
    H5Tclose(mem);
    H5Tclose(type);
    H5Aclose(a);
}

/* The dataset at path converted to `type` (elem bytes each); *count its element count. Exits
 * when it is missing. */
static void *read_dataset(h5ref *r, const char *path, hid_t type, size_t elem, size_t *count) {
    hid_t ds = h5_exists(r, path) ? H5Dopen2(r->file, path, H5P_DEFAULT) : -1;
    if (ds < 0) {
        fprintf(stderr, "%s: dataset %s missing\n", r->path, path);
        exit(1);
    }
    hid_t space = H5Dget_space(ds);
    size_t n = (size_t)H5Sget_simple_extent_npoints(space);
    void *out = malloc((n ? n : 1) * elem);
    if (!out || H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
        fprintf(stderr, "%s: cannot read %s\n", r->path, path);
        exit(1);
    }
    H5Sclose(space);
    H5Dclose(ds);
    if (count) *count = n;
    return out;
}

static float *read_floats(h5ref *r, const char *path, size_t *count) {
    return read_dataset(r, path, H5T_NATIVE_FLOAT, sizeof(float), count);
}

/* /names: fixed-length strings, into count rows of RMX_PARAM_NAME_MAX. */
static char (*read_names(h5ref *r, int *count))[RMX_PARAM_NAME_MAX] {
    hid_t ds = H5Dopen2(r->file, "names", H5P_DEFAULT);
    hid_t type = ds >= 0 ? H5Dget_type(ds) : -1;
    hid_t space = ds >= 0 ? H5Dget_space(ds) : -1;
    if (space < 0 || H5Tget_class(type) != H5T_STRING || H5Tis_variable_str(type) > 0) {
        fprintf(stderr, "%s: /names must be fixed-length strings\n", r->path);
        exit(1);
    }
    size_t width = H5Tget_size(type);
    int n = (int)H5Sget_simple_extent_npoints(space);
    char *block = calloc((size_t)n * width + 1, 1);
    hid_t mem = H5Tcopy(H5T_C_S1);
    H5Tset_size(mem, width);
    H5Tset_strpad(mem, H5T_STR_NULLPAD);
    if (H5Dread(ds, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, block) < 0) {
        fprintf(stderr, "%s: cannot read /names\n", r->path);
        exit(1);
    }
    char (*names)[RMX_PARAM_NAME_MAX] = calloc((size_t)n, sizeof *names);
    for (int i = 0; i < n; i++) {
        size_t len = strnlen(block + (size_t)i * width, width);
        if (len >= RMX_PARAM_NAME_MAX) len = RMX_PARAM_NAME_MAX - 1;
        memcpy(names[i], block + (size_t)i * width, len);
    }
    H5Tclose(mem);
    H5Tclose(type);
    H5Sclose(space);
    H5Dclose(ds);
    free(block);
    *count = n;
    return names;
}

static rmx_ae_hparams file_hparams(h5ref *r) {
    rmx_ae_hparams hp;
    rmx_ae_hparams_default(&hp);
    char bottleneck[16];
    attr_string(r, "bottleneck", bottleneck, sizeof bottleneck);
    hid_t a = open_attr(r, "channel_mult"), space = H5Aget_space(a);
    hp.n_levels = (int)H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    H5Aclose(a);
    if (hp.n_levels < 1 || hp.n_levels > RMX_AE_MAX_LEVELS) {
        fprintf(stderr, "%s: channel_mult has %d levels\n", r->path, hp.n_levels);
        exit(1);
    }
    attr_values(r, "channel_mult", H5T_NATIVE_INT, hp.channel_mult, (size_t)hp.n_levels);
    hp.channels = attr_int(r, "channels");
    hp.res_blocks = attr_int(r, "res_blocks");
    hp.latent_channels = attr_int(r, "latent_channels");
    hp.bottleneck = strcmp(bottleneck, "vq") == 0 ? RMX_AE_VQ : RMX_AE_KL;
    hp.kl_weight = (float)attr_double(r, "kl_weight");
    hp.codebook_size = attr_int(r, "codebook_size");
    hp.commitment = (float)attr_double(r, "commitment");
    hp.mels = attr_int(r, "mels");
    hp.frames = attr_int(r, "frames");
    hp.micro_batch = attr_int(r, "batch");
    return hp;
}

/* max |a - b| / max |b| (0 / 0 = 0): the normwise relative difference of two tensors. */
static double ref_rel_diff(const float *a, const float *b, size_t n) {
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return scale > 0 ? diff / scale : diff;
}

static double ref_max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static double ref_max_abs(const float *a, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

/* Tensor k of the state_dict order: the trained registry's, then the state registry's. */
static const rmx_param_info *nth_tensor(rmx_ae *ae, int k, rmx_params **reg, int *id) {
    rmx_params *p = rmx_ae_params(ae), *s = rmx_ae_state(ae);
    *reg = k < p->count ? p : s;
    *id = k < p->count ? k : k - p->count;
    return rmx_params_get(*reg, *id);
}

static int tensor_count(rmx_ae *ae) { return rmx_ae_params(ae)->count + rmx_ae_state(ae)->count; }

static void check_names(h5ref *r, rmx_ae *ae, const char *bn) {
    int n;
    char (*names)[RMX_PARAM_NAME_MAX] = read_names(r, &n);
    size_t scount;
    int64_t *shapes = read_dataset(r, "shapes", H5T_NATIVE_INT64, sizeof(int64_t), &scount);
    int total = tensor_count(ae);
    CHECK(n == total && scount == (size_t)n * 4, "%s: the twin has %d tensors, we have %d", bn, n, total);
    int mismatches = 0;
    for (int k = 0; k < n && k < total; k++) {
        rmx_params *reg;
        int id;
        const rmx_param_info *t = nth_tensor(ae, k, &reg, &id);
        int same = strcmp(t->name, names[k]) == 0;
        for (int d = 0; d < 4; d++) same &= shapes[k * 4 + d] == (d < t->ndim ? t->shape[d] : 0);
        if (!same && mismatches++ < 5) {
            char desc[160];
            fprintf(stderr, "  %s: tensor %d: ours %s, twin %s [%lld, %lld, %lld, %lld]\n", bn, k,
                    rmx_params_describe(reg, id, desc, sizeof desc), names[k], (long long)shapes[k * 4],
                    (long long)shapes[k * 4 + 1], (long long)shapes[k * 4 + 2], (long long)shapes[k * 4 + 3]);
        }
    }
    CHECK(mismatches == 0, "%s: %d tensors differ in name, shape or position from the twin's state_dict",
          bn, mismatches);
    free(names);
    free(shapes);
}

/* Every tensor of both registries from /weights/<name>; host copies of the values loaded. */
static float **load_weights(h5ref *r, rmx_ae *ae) {
    int total = tensor_count(ae);
    float **loaded = calloc((size_t)total, sizeof *loaded);
    char path[160];
    for (int k = 0; k < total; k++) {
        rmx_params *reg;
        int id;
        const rmx_param_info *t = nth_tensor(ae, k, &reg, &id);
        snprintf(path, sizeof path, "weights/%s", t->name);
        size_t n;
        loaded[k] = read_floats(r, path, &n);
        if (n != t->numel) {
            fprintf(stderr, "%s: %s has %zu values, want %zu\n", r->path, path, n, t->numel);
            exit(1);
        }
        reg->be->to_backend(reg->be, rmx_params_data(reg, id), loaded[k], n * sizeof(float));
    }
    return loaded;
}

typedef struct {
    double loss, grad, dx, weights_lr; /* worst figures, over backends */
} worst_figures;

static void run_case(h5ref *r, rmx_backend *be, worst_figures *w) {
    const char *bn = be->name;
    rmx_ae_hparams hp = file_hparams(r);
    int vq = hp.bottleneck == RMX_AE_VQ, n = hp.micro_batch;
    const char *reg_name = vq ? "commit" : "kl";
    rmx_ae *ae = create_or_die(be, &hp, 99);
    check_names(r, ae, bn);
    float **loaded = load_weights(r, ae);
    rmx_params *p = rmx_ae_params(ae), *s = rmx_ae_state(ae);
    uint64_t seed = attr_u64(r, "seed");
    int64_t step = (int64_t)attr_u64(r, "step");

    size_t count, n_index;
    float *xh = read_floats(r, "inputs/x", &count);
    int64_t *index = read_dataset(r, "inputs/sample_index", H5T_NATIVE_INT64, sizeof(int64_t), &n_index);
    CHECK(count == (size_t)n * hp.mels * hp.frames && n_index == (size_t)n, "%s: input sizes %zu, %zu", bn,
          count, n_index);
    int lc, lh, lw;
    rmx_ae_latent_shape(ae, &lc, &lh, &lw);
    size_t nz = (size_t)n * lc * lh * lw;

    /* kl: the noise of (seed, RMX_RNG_LATENT, step, sample) is the twin's */
    if (!vq) {
        size_t ne;
        float *eps_ref = read_floats(r, "inputs/eps", &ne);
        float *eps = be->alloc(be, nz * sizeof *eps);
        be->randn(be, eps, n, nz / (size_t)n, seed, RMX_RNG_LATENT, (uint64_t)step, index);
        float *eps_h = host_copy(be, eps, nz);
        double e = ne == nz ? ref_max_abs_diff(eps_h, eps_ref, nz) : INFINITY;
        printf("%s %s: latent noise of (seed %#llx, step %lld, samples %lld, %lld): max |ours - file| %.2e\n",
               r->path, bn, (unsigned long long)seed, (long long)step, (long long)index[0],
               (long long)index[n - 1], e);
        CHECK(e <= TOL_EPS, "%s: the latent noise differs from the file's by %.3g", bn, e);
        free(eps_h);
        free(eps_ref);
        be->free(be, eps);
    }

    /* one forward/backward */
    float *x = be->alloc(be, count * sizeof *x), *dx = be->alloc(be, count * sizeof *dx);
    float *terms = be->alloc(be, RMX_AE_N_LOSS * sizeof *terms);
    be->to_backend(be, x, xh, count * sizeof *x);
    rmx_ae_step_begin(ae);
    rmx_ae_forward_backward(ae, n, x, dx, index, seed, step, 1.0f / (float)n, terms);
    float th[RMX_AE_N_LOSS];
    be->to_host(be, th, terms, sizeof th);
    double *loss_ref = read_dataset(r, "loss", H5T_NATIVE_DOUBLE, sizeof(double), NULL);
    double ours[3] = {th[RMX_AE_LOSS_REC], th[vq ? RMX_AE_LOSS_COMMIT : RMX_AE_LOSS_KL],
                      rmx_ae_total_loss(&hp, th)};
    const char *labels[3] = {"rec", reg_name, "total"};
    double loss_worst = 0.0;
    for (int k = 0; k < 3; k++) {
        double e = fabs(ours[k] - loss_ref[k]) / fabs(loss_ref[k]);
        CHECK(e <= TOL_LOSS, "%s: loss %s %.9g, twin %.9g: relative difference %.3g", bn, labels[k], ours[k],
              loss_ref[k], e);
        loss_worst = fmax(loss_worst, e);
    }
    printf("%s %s: loss %.8g vs twin %.8g (rec %.8g / %.8g, %s %.8g / %.8g): worst %.2e\n", r->path, bn,
           ours[2], loss_ref[2], ours[0], loss_ref[0], reg_name, ours[1], loss_ref[1], loss_worst);
    w->loss = fmax(w->loss, loss_worst);

    if (vq) {
        size_t ncodes;
        int32_t *codes_ref = read_dataset(r, "codes", H5T_NATIVE_INT32, sizeof(int32_t), &ncodes);
        int32_t *codes = host_copy_ints(be, rmx_ae_vq_codes(ae), (size_t)n * lh * lw);
        size_t differ = 0;
        for (size_t i = 0; i < ncodes && ncodes == (size_t)n * lh * lw; i++) differ += codes[i] != codes_ref[i];
        CHECK(ncodes == (size_t)n * lh * lw && differ == 0, "%s: %zu of %zu nearest codes differ from the twin's",
              bn, differ, ncodes);
        printf("%s %s: %zu nearest codes, %zu differ\n", r->path, bn, ncodes, differ);
        free(codes);
        free(codes_ref);
    }

    /* every gradient, and d total / d x */
    float *grad = host_copy(be, p->grad, p->span), *dx_h = host_copy(be, dx, count);
    float *dx_ref = read_floats(r, "dx", NULL);
    float **grad_ref = calloc((size_t)p->count, sizeof *grad_ref);
    char path[160];
    double global = 0.0;
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *ti = rmx_params_get(p, i);
        snprintf(path, sizeof path, "grads/%s", ti->name);
        size_t ng;
        grad_ref[i] = read_floats(r, path, &ng);
        if (ng != ti->numel) {
            fprintf(stderr, "%s: %s has %zu values, want %zu\n", r->path, path, ng, ti->numel);
            exit(1);
        }
        global = fmax(global, ref_max_abs(grad_ref[i], ti->numel));
    }
    double worst = 0.0, worst_zero = 0.0;
    const char *worst_name = "";
    int zero_tensors = 0;
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *ti = rmx_params_get(p, i);
        const float *g = grad + ti->offset;
        if (ref_max_abs(grad_ref[i], ti->numel) <= ZERO_GRAD * global) {
            double e = ref_max_abs(g, ti->numel) / global;
            CHECK(e <= TOL_GRAD, "%s: gradient of %s is 0 (twin %.3g of the largest), ours %.3g of the largest",
                  bn, ti->name, ref_max_abs(grad_ref[i], ti->numel) / global, e);
            worst_zero = fmax(worst_zero, e);
            zero_tensors++;
            continue;
        }
        double e = ref_rel_diff(g, grad_ref[i], ti->numel);
        CHECK(e <= TOL_GRAD, "%s: gradient of %s differs from the twin's by %.3g", bn, ti->name, e);
        if (e > worst) {
            worst = e;
            worst_name = ti->name;
        }
    }
    double dx_err = ref_rel_diff(dx_h, dx_ref, count);
    CHECK(dx_err <= TOL_GRAD, "%s: d total / d x differs from the twin's by %.3g", bn, dx_err);
    printf("%s %s: %d gradients, worst %.2e (%s); %d structurally zero, ours at most %.2e of the largest; "
           "d total / d x %.2e\n",
           r->path, bn, p->count, worst, worst_name, zero_tensors, worst_zero, dx_err);
    w->grad = fmax(w->grad, worst);
    w->dx = fmax(w->dx, dx_err);

    /* one AdamW step of the backend over the flat buffers */
    rmx_adamw_hparams ah = {(float)attr_double(r, "lr"), (float)attr_double(r, "beta1"),
                            (float)attr_double(r, "beta2"), (float)attr_double(r, "eps"),
                            (float)attr_double(r, "weight_decay"), 1};
    be->adamw(be, p->span, p->n_decay, p->data, p->grad, p->m, p->v, &ah);
    if (h5_exists(r, "updated")) {
        float *updated = host_copy(be, p->data, p->span);
        double worst_w = 0.0;
        const char *worst_w_name = "";
        size_t exempt = 0;
        for (int i = 0; i < p->count; i++) {
            const rmx_param_info *ti = rmx_params_get(p, i);
            snprintf(path, sizeof path, "updated/%s", ti->name);
            float *want = read_floats(r, path, NULL);
            double tensor_max = ref_max_abs(grad_ref[i], ti->numel);
            double band = TOL_GRAD * (tensor_max <= ZERO_GRAD * global ? global : tensor_max);
            for (size_t e = 0; e < ti->numel; e++) {
                if (fabs(grad_ref[i][e]) <= band) {
                    exempt++;
                    continue;
                }
                double d = fabs((double)updated[ti->offset + e] - want[e]);
                if (d > worst_w) {
                    worst_w = d;
                    worst_w_name = ti->name;
                }
            }
            free(want);
        }
        printf("%s %s: after AdamW (lr %g, weight decay %g): worst weight difference %.2e = %.2e lr (%s); "
               "%zu of %zu elements with |g| within the gradient tolerance of 0 exempt\n",
               r->path, bn, ah.lr, ah.weight_decay, worst_w, worst_w / ah.lr, worst_w_name, exempt, p->numel);
        CHECK(worst_w <= 1e-3 * ah.lr + 1e-6, "%s: weights after AdamW differ by %.3g", bn, worst_w);
        w->weights_lr = fmax(w->weights_lr, worst_w / ah.lr);
        free(updated);
    }
    /* the optimiser never touches the vq codebook and its statistics */
    for (int i = 0; i < s->count; i++) {
        const rmx_param_info *ti = rmx_params_get(s, i);
        float *now = host_copy(be, rmx_params_data(s, i), ti->numel);
        CHECK(memcmp(now, loaded[p->count + i], ti->numel * sizeof(float)) == 0, "%s: AdamW changed %s", bn,
              ti->name);
        free(now);
    }

    for (int i = 0; i < p->count; i++) free(grad_ref[i]);
    for (int k = 0; k < tensor_count(ae); k++) free(loaded[k]);
    free(loaded);
    free(grad_ref);
    free(grad);
    free(dx_h);
    free(dx_ref);
    free(loss_ref);
    free(xh);
    free(index);
    be->free(be, x);
    be->free(be, dx);
    be->free(be, terms);
    rmx_ae_free(ae);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE.h5...\n", argv[0]);
        return 2;
    }
    worst_figures w = {0};
    for (int f = 1; f < argc; f++) {
        h5ref r = {H5Fopen(argv[f], H5F_ACC_RDONLY, H5P_DEFAULT), argv[f]};
        if (r.file < 0) {
            fprintf(stderr, "cannot open %s\n", argv[f]);
            return 1;
        }
        rmx_backend *ref = rmx_backend_ref_create(), *cpu = rmx_backend_cpu_create(0);
        run_case(&r, ref, &w);
        run_case(&r, cpu, &w);
        ref->destroy(ref);
        cpu->destroy(cpu);
        H5Fclose(r.file);
    }
    printf("worst relative differences: loss %.2e, gradient %.2e, d total / d x %.2e; weights after AdamW "
           "%.2e lr\n",
           w.loss, w.grad, w.dx, w.weights_lr);
    return test_finish("model_ae_reference");
}
