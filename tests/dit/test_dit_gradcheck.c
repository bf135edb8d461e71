/* The whole DiT's backward against central finite differences, on the tiny size (C 4, latent
 * 8 x 12, patch 2, D 32, 2 blocks of 4 heads, 3 genres) with every trained tensor randomised
 * first (at DiT's init the adaLN-Zero layers make most gradients exactly zero), on the reference
 * backend; then the cpu backend against the reference for the output and every gradient.
 *
 * The objective is L = <G, out> for a fixed random G, so d L / d out = G exactly and L is summed
 * in double on the host. Checked: six elements of every trained tensor (first, middle, last and
 * three spread ones) and every third element of the input.
 * All of it twice: the stage-2 model, and the model with style tokens (hparams.style = 1; style
 * latents U(-1, 1), styles kept, dropped, kept: so style_embedder, style_type and style_null all
 * carry gradients; no gradient w.r.t. the style latents exists, none is checked). */
#include "dit_test.h"

#define NS 3      /* samples: labels 1, 2 and the null class 3 */
#define STEP 1e-2 /* central-difference step */

typedef struct {
    rmx_backend *be;
    rmx_dit *dit;
    rmx_dit_hparams hp;
    size_t count;
    float *xh, *gh, *outh;
    float *x, *g, *dx;
    float *style;     /* style on: the style latents (backend), else NULL */
    uint8_t keep[NS]; /* style on: 1, 0, 1 */
    float t[NS];
    int32_t y[NS];
    int checked, failed;
} fixture;

static void fixture_init(fixture *f, rmx_backend *be, int style) {
    memset(f, 0, sizeof *f);
    f->be = be;
    f->hp = dit_tiny_hparams(NS);
    f->hp.style = style;
    f->dit = dit_create_or_die(be, &f->hp, 5);
    dit_randomise(f->dit, 77);
    f->count = NS * dit_sample_count(&f->hp);
    f->xh = malloc(f->count * sizeof(float));
    f->gh = malloc(f->count * sizeof(float));
    f->outh = malloc(f->count * sizeof(float));
    dit_test_inputs(&f->hp, NS, 1, f->xh, f->t, f->y);
    fill_uniform(f->gh, f->count, 13);
    f->x = backend_input(be, f->xh, f->count);
    f->g = backend_input(be, f->gh, f->count);
    f->dx = be->alloc(be, f->count * sizeof(float));
    if (style) {
        float *sh = malloc(f->count * sizeof(float));
        fill_uniform(sh, f->count, 29);
        f->style = backend_input(be, sh, f->count);
        free(sh);
        for (int i = 0; i < NS; i++) f->keep[i] = (uint8_t)(i % 2 == 0);
    }
}

static const float *fixture_forward(fixture *f) {
    return f->hp.style ? rmx_dit_forward_style(f->dit, NS, f->x, f->t, f->y, f->style, f->keep)
                       : rmx_dit_forward(f->dit, NS, f->x, f->t, f->y);
}

static void fixture_free(fixture *f) {
    f->be->free(f->be, f->x);
    f->be->free(f->be, f->g);
    f->be->free(f->be, f->dx);
    if (f->style) f->be->free(f->be, f->style);
    free(f->xh);
    free(f->gh);
    free(f->outh);
    rmx_dit_free(f->dit);
}

static double objective(fixture *f) {
    const float *out = fixture_forward(f);
    f->be->to_host(f->be, f->outh, out, f->count * sizeof(float));
    double s = 0.0;
    for (size_t i = 0; i < f->count; i++) s += (double)f->gh[i] * f->outh[i];
    return s;
}

/* Forward + backward; host copies of the gradients (caller frees). */
static void gradients(fixture *f, float **grad, float **dx, float **out) {
    rmx_dit_step_begin(f->dit);
    const float *o = fixture_forward(f);
    *out = host_copy(f->be, o, f->count);
    rmx_dit_backward(f->dit, NS, f->g, f->dx);
    rmx_params *p = rmx_dit_params(f->dit);
    *grad = host_copy(f->be, p->grad, p->span);
    *dx = host_copy(f->be, f->dx, f->count);
}

static double central_difference(fixture *f, float *p) {
    float orig = host_get(f->be, p);
    backend_set(f->be, p, orig + (float)STEP);
    double up = objective(f);
    backend_set(f->be, p, orig - (float)STEP);
    double down = objective(f);
    backend_set(f->be, p, orig);
    /* the step actually taken, in float */
    return (up - down) / ((double)(orig + (float)STEP) - (double)(orig - (float)STEP));
}

static double worst_rel = 0.0;

static void compare(fixture *f, const char *what, size_t e, double analytic, double numeric,
                    double atol) {
    double err = fabs(analytic - numeric);
    double tol = 2e-2 * fmax(fabs(analytic), fabs(numeric)) + atol;
    f->checked++;
    if (fabs(numeric) > 10 * atol) worst_rel = fmax(worst_rel, err / fabs(numeric));
    if (err > tol) {
        f->failed++;
        fprintf(stderr, "  %s[%zu]: analytic %.6g, numeric %.6g\n", what, e, analytic, numeric);
    }
}

static void report(fixture *f, const char *part) {
    printf("%s: %d checked, %d outside tolerance\n", part, f->checked, f->failed);
    CHECK(f->checked > 0, "%s: nothing checked", part);
    CHECK(f->failed == 0, "%s: %d gradients disagree with finite differences", part, f->failed);
    f->checked = f->failed = 0;
}

static void test_finite_differences(int style) {
    rmx_backend *be = rmx_backend_ref_create();
    fixture f;
    fixture_init(&f, be, style);
    printf("---- %s ----\n", style ? "style tokens (kept, dropped, kept)" : "stage 2 (no style tokens)");
    rmx_params *p = rmx_dit_params(f.dit);
    float *grad, *dx, *out;
    gradients(&f, &grad, &dx, &out);
    printf("output max |.| %.3g, gradient max |.| %.3g, input gradient max |.| %.3g\n",
           max_abs(out, f.count), max_abs(grad, p->span), max_abs(dx, f.count));
    CHECK(max_abs(out, f.count) > 0.1, "the randomised model should not output ~0");

    /* The same pass twice gives the same numbers (fixed-order reductions). */
    float *grad2, *dx2, *out2;
    gradients(&f, &grad2, &dx2, &out2);
    CHECK(memcmp(grad, grad2, p->span * sizeof *grad) == 0 &&
              memcmp(dx, dx2, f.count * sizeof *dx) == 0 && memcmp(out, out2, f.count * sizeof *out) == 0,
          "repeating a pass changed the result");
    free(grad2);
    free(dx2);
    free(out2);

    double atol = 1e-3 * max_abs(grad, p->span);
    int zero_tensors = 0;
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *t = rmx_params_get(p, i);
        if (max_abs(grad + t->offset, t->numel) == 0.0) {
            zero_tensors++;
            fprintf(stderr, "  %s has an all-zero gradient\n", t->name);
        }
        size_t el[6] = {0, t->numel / 2, t->numel - 1, t->numel / 7, (t->numel * 3) / 5,
                        (t->numel * 9) / 10};
        for (int k = 0; k < 6; k++) {
            if (k > 0 && (el[k] == el[k - 1] || el[k] == 0)) continue;
            double num = central_difference(&f, rmx_params_data(p, i) + el[k]);
            compare(&f, t->name, el[k], grad[t->offset + el[k]], num, atol);
        }
    }
    CHECK(zero_tensors == 0, "%d tensors with an all-zero gradient", zero_tensors);
    report(&f, "parameters (6 elements of each of the trained tensors)");
    printf("  worst relative difference where the derivative is not tiny: %.2e\n", worst_rel);

    worst_rel = 0.0;
    if (style) { /* the style latents matter, and only through kept samples */
        float *o1 = host_copy(be, fixture_forward(&f), f.count);
        float *sh = host_copy(be, f.style, f.count);
        size_t per = dit_sample_count(&f.hp);
        for (size_t e = 0; e < f.count; e++) sh[e] = -sh[e];
        be->to_backend(be, f.style, sh, f.count * sizeof *sh);
        float *o2 = host_copy(be, fixture_forward(&f), f.count);
        CHECK(max_abs(o1, per) > 0 && rel_diff(o2, o1, per) > 1e-3,
              "a kept style does not change the output");
        CHECK(memcmp(o1 + per, o2 + per, per * sizeof *o1) == 0,
              "a dropped style's latent changed the output");
        for (size_t e = 0; e < f.count; e++) sh[e] = -sh[e];
        be->to_backend(be, f.style, sh, f.count * sizeof *sh);
        free(o1);
        free(o2);
        free(sh);
    }
    double atol_x = 1e-3 * max_abs(dx, f.count);
    for (size_t j = 0; j < f.count; j += 3) {
        double num = central_difference(&f, f.x + j);
        compare(&f, "input", j, dx[j], num, atol_x);
    }
    report(&f, "input gradient (every third element)");
    printf("  worst relative difference where the derivative is not tiny: %.2e\n", worst_rel);
    free(grad);
    free(dx);
    free(out);
    fixture_free(&f);
    be->destroy(be);
}

/* ---- the cpu backend against the reference ---- */

static void test_cpu_vs_ref(int style) {
    rmx_backend *ref = rmx_backend_ref_create(), *cpu = rmx_backend_cpu_create(0);
    fixture a, b;
    fixture_init(&a, ref, style);
    fixture_init(&b, cpu, style);
    float *ga, *dxa, *oa, *gb, *dxb, *ob;
    gradients(&a, &ga, &dxa, &oa);
    gradients(&b, &gb, &dxb, &ob);
    rmx_params *p = rmx_dit_params(a.dit);
    double out_err = rel_diff(ob, oa, a.count), dx_err = rel_diff(dxb, dxa, a.count);
    double worst = 0.0;
    const char *worst_name = "";
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *t = rmx_params_get(p, i);
        double e = rel_diff(gb + t->offset, ga + t->offset, t->numel);
        CHECK(e <= 1e-5, "cpu vs ref: gradient of %s differs by %.3g (relative)", t->name, e);
        if (e > worst) {
            worst = e;
            worst_name = t->name;
        }
    }
    printf("cpu vs ref%s: output %.2e, input gradient %.2e, worst parameter gradient %.2e (%s)\n",
           style ? " (style)" : "", out_err, dx_err, worst, worst_name);
    CHECK(out_err <= 1e-5, "cpu vs ref: output differs by %.3g", out_err);
    CHECK(dx_err <= 1e-5, "cpu vs ref: input gradient differs by %.3g", dx_err);
    free(ga);
    free(dxa);
    free(oa);
    free(gb);
    free(dxb);
    free(ob);
    fixture_free(&a);
    fixture_free(&b);
    ref->destroy(ref);
    cpu->destroy(cpu);
}

int main(void) {
    for (int style = 0; style < 2; style++) {
        test_finite_differences(style);
        test_cpu_vs_ref(style);
    }
    return test_finish("dit_gradcheck");
}
