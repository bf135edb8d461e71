/* The segment plan and crossfade of infer/infer.h: for many lengths, segment sizes and overlaps,
 * the segments cover every frame, the last one ends at the last frame (or one segment is padded),
 * consecutive ones share at least `overlap` frames, and the crossfade weights lie in [0, 1] and add
 * up to 1 at every frame. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "infer/infer.h"

int main(void) {
    int failures = 0;
    const int segs[] = {8, 16, 256};
    for (int si = 0; si < 3; si++) {
        const int seg = segs[si];
        for (int overlap = 0; overlap <= seg / 2; overlap += (seg > 16 ? 16 : 1)) {
            for (int64_t frames = 1; frames <= 6 * seg + 3; frames += (seg > 16 ? 7 : 1)) {
                const int64_t count = rmx_infer_segment_count(frames, seg, overlap);
                double *sum = calloc((size_t)frames, sizeof *sum);
                int64_t prev_start = -1;
                for (int64_t k = 0; k < count; k++) {
                    const int64_t start = rmx_infer_segment_start(k, count, frames, seg, overlap);
                    if (start < 0 || start <= prev_start || (frames >= seg && start + seg > frames)) {
                        fprintf(stderr, "FAIL frames %lld seg %d overlap %d: segment %lld starts at %lld\n",
                                (long long)frames, seg, overlap, (long long)k, (long long)start);
                        failures++;
                    }
                    if (k > 0 && prev_start + seg - start < overlap) {
                        fprintf(stderr, "FAIL frames %lld seg %d overlap %d: segments %lld and %lld share %lld frames\n",
                                (long long)frames, seg, overlap, (long long)k - 1, (long long)k,
                                (long long)(prev_start + seg - start));
                        failures++;
                    }
                    for (int i = 0; i < seg && start + i < frames; i++) {
                        float w = rmx_infer_crossfade(k, count, frames, seg, overlap, start + i);
                        if (!(w >= 0.0f && w <= 1.0f)) failures++;
                        sum[start + i] += w;
                    }
                    prev_start = start;
                }
                if (frames >= seg && prev_start + seg != frames) {
                    fprintf(stderr, "FAIL frames %lld seg %d: the last segment ends at %lld\n", (long long)frames, seg,
                            (long long)(prev_start + seg));
                    failures++;
                }
                for (int64_t t = 0; t < frames; t++)
                    if (fabs(sum[t] - 1.0) > 1e-6) {
                        fprintf(stderr, "FAIL frames %lld seg %d overlap %d: weights at frame %lld add up to %.7f\n",
                                (long long)frames, seg, overlap, (long long)t, sum[t]);
                        failures++;
                        break;
                    }
                free(sum);
            }
        }
    }
    printf("segments: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
