/* bench_cuda_step: the training step of the brief's bench-size autoencoder on the cuda backend.
 *
 * A step is what the trainer does for one global batch B on one GPU: step_begin (zero the
 * gradients), B / m micro-batches of forward + backward (m = --micro), the gradient norm read back
 * to the host (the trainer's one synchronisation per step) and AdamW over the flat buffer. The
 * input stays on the GPU: this measures the compute, not the data pipeline. After --warmup steps,
 * --steps timed steps; the median is reported.
 *
 * FLOPs: the brief's 381 GFLOP per step of 8 samples (forward + backward, the convolutions), so
 * B / 8 of that per step. Peaks (dense, no sparsity) default to the H100 SXM's: 67 TFLOP/s fp32,
 * 495 TF32; an H200 has the same; a PCIe H100 has 51 and 378 (--peak-fp32, --peak-tf32).
 * TF32 is used when RMX_CUDA_TF32=1 is set (the backend reads it at creation).
 *
 * Output: a human report, then one "RESULT key=value ..." line for run_cuda_bench.sh. */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend.h"
#include "model/autoencoder.h"
#include "bench/bench_step.h"

#define BRIEF_GFLOP_PER_8 381.0

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void usage(void) {
    fprintf(stderr, "usage: bench_cuda_step [--batch B] [--micro M] [--steps N] [--warmup N]\n"
                    "                       [--device D] [--peak-fp32 TFLOPS] [--peak-tf32 TFLOPS]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int batch = 64, micro = 64, steps = 10, warmup = 3, device = 0;
    double peak_fp32 = 67.0, peak_tf32 = 495.0;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) usage();
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--batch")) batch = atoi(v);
        else if (!strcmp(k, "--micro")) micro = atoi(v);
        else if (!strcmp(k, "--steps")) steps = atoi(v);
        else if (!strcmp(k, "--warmup")) warmup = atoi(v);
        else if (!strcmp(k, "--device")) device = atoi(v);
        else if (!strcmp(k, "--peak-fp32")) peak_fp32 = atof(v);
        else if (!strcmp(k, "--peak-tf32")) peak_tf32 = atof(v);
        else usage();
    }
    if (batch < 1 || micro < 1 || batch % micro || steps < 1 || warmup < 0) usage();
    int accum = batch / micro;

    char err[512];
    rmx_backend *be = rmx_backend_cuda_create(device, err, sizeof err);
    if (!be) {
        fprintf(stderr, "bench_cuda_step: %s\n", err);
        return 77;
    }
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, device);
    const char *tf32_env = getenv("RMX_CUDA_TF32");
    int tf32 = tf32_env && !strcmp(tf32_env, "1");

    rmx_ae_hparams hp;
    rmx_ae_hparams_default(&hp);
    hp.micro_batch = micro;
    rmx_ae *ae = rmx_ae_create(be, &hp, BENCH_SEED, err, sizeof err);
    if (!ae) {
        fprintf(stderr, "bench_cuda_step: %s\n", err);
        return 1;
    }
    rmx_params *p = rmx_ae_params(ae);

    bench_batch in = bench_batch_make(be, &hp, batch);
    float *x = in.x, *dev = in.scalars;
    int64_t *index = in.index;
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);

    printf("Remixer train step on the GPU: autoencoder 1x%dx%d, C %d, mult [%d, %d, %d], "
           "res_blocks %d, latent %d, kl; %zu parameters\n",
           hp.mels, hp.frames, hp.channels, hp.channel_mult[0], hp.channel_mult[1],
           hp.channel_mult[2], hp.res_blocks, hp.latent_channels, p->numel);
    printf("device %d: %s, %d SMs, %.1f GiB (%.1f GiB in use after set-up); batch %d = %d x "
           "micro-batch %d; arena %.2f GiB (%.0f MB a sample); GEMMs %s\n",
           device, prop.name, prop.multiProcessorCount, total_b / 1073741824.0,
           (total_b - free_b) / 1073741824.0, batch, accum, micro,
           rmx_ae_arena_bytes(ae) / 1073741824.0, rmx_ae_arena_bytes(ae) / 1e6 / micro,
           tf32 ? "TF32 (RMX_CUDA_TF32=1)" : "fp32");

    double *times = malloc((size_t)steps * sizeof *times);
    if (!times) abort();
    float host[RMX_AE_N_LOSS + 1] = {0}, first_loss = 0;
    for (int s = 0; s < warmup + steps; s++) {
        be->sync(be);
        double t0 = now();
        be->fill(be, dev, 0.0f, RMX_AE_N_LOSS + 1);
        rmx_ae_step_begin(ae);
        for (int a = 0; a < accum; a++)
            rmx_ae_forward_backward(ae, micro, x + (size_t)a * micro * hp.mels * hp.frames, NULL, index + a * micro,
                                    BENCH_SEED, s, 1.0f / (float)batch, dev);
        be->sumsq(be, p->span, p->grad, dev + RMX_AE_N_LOSS);
        be->to_host(be, host, dev, sizeof host); /* the trainer's once-a-step read-back */
        rmx_adamw_hparams ah = {1e-4f, 0.9f, 0.999f, 1e-8f, 0.01f, s + 1};
        be->adamw(be, p->span, p->n_decay, p->data, p->grad, p->m, p->v, &ah);
        be->sync(be);
        double dt = now() - t0;
        if (s >= warmup) times[s - warmup] = dt;
        if (s == 0) first_loss = host[RMX_AE_LOSS_REC];
    }
    double t = median(times, steps);
    double gflop = BRIEF_GFLOP_PER_8 * batch / 8.0, tflops = gflop / t * 1e-3;
    printf("step: median %.2f ms over %d steps (after %d warm-up), %.0f samples/s\n", t * 1e3, steps,
           warmup, batch / t);
    printf("throughput: %.1f TFLOP/s (%.0f GFLOP a step) = %.1f%% of %.0f TFLOP/s fp32, %.1f%% of "
           "%.0f TFLOP/s TF32 dense\n",
           tflops, gflop, 100.0 * tflops / peak_fp32, peak_fp32, 100.0 * tflops / peak_tf32, peak_tf32);
    printf("rec loss: first step %.6g, last step %.6g\n", first_loss, host[RMX_AE_LOSS_REC]);
    printf("RESULT backend=cuda device=\"%s\" tf32=%d batch=%d micro=%d step_ms=%.3f samples_s=%.1f "
           "tflops=%.2f pct_fp32=%.1f pct_tf32=%.1f\n",
           prop.name, tf32, batch, micro, t * 1e3, batch / t, tflops, 100.0 * tflops / peak_fp32,
           100.0 * tflops / peak_tf32);

    bench_batch_free(be, &in);
    rmx_ae_free(ae);
    be->destroy(be);
    free(times);
    return 0;
}
