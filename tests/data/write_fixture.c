/* Writes the small two-shard dataset the h5py check reads: `write_fixture DIR`. The values follow
 * rmxt_mel_value, which check_h5py.py recomputes independently. */
#include "data_test_util.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: write_fixture DIR\n");
        return 2;
    }
    rmx_mel_params p = rmxt_params(8, 16, 3);
    int rows[2] = {3, 4};
    return rmxt_write_dataset(argv[1], &p, 2, rows, 0) == 0 ? 0 : 1;
}
