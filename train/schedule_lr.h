/* Learning rate: linear warm-up from 0 to lr over `warmup` steps, then cosine decay to min_lr at
 * `steps`. A pure function of the step, so a resumed run continues the same curve. */
#ifndef RMX_SCHEDULE_LR_H
#define RMX_SCHEDULE_LR_H
#include <math.h>
#include <stdint.h>

static inline float rmx_lr_at(int64_t step, int64_t steps, int64_t warmup, float lr, float min_lr) {
    if (warmup > 0 && step < warmup) return lr * (float)(step + 1) / (float)warmup;
    int64_t span = steps - warmup;
    if (span <= 0) return lr;
    double progress = (double)(step - warmup) / (double)span;
    if (progress > 1) progress = 1;
    return min_lr + (lr - min_lr) * (float)(0.5 * (1.0 + cos(M_PI * progress)));
}

#endif
