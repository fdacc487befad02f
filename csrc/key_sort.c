/* A least-significant-digit radix sort (key_sort.h): a byte of the keys at a time, each
 * pass a stable counting sort, skipping the bytes that every key has the same. Time is
 * O(n) per byte that varies; qsort's callback per comparison cost the tape's compiler
 * more than everything else it does. */
#include "key_sort.h"

#include <stdlib.h>
#include <string.h>
#include "ag.h"

int ag_sort_by_keys(uint64_t *keys, uint32_t *items, size_t n)
{
    uint64_t differ = 0; /* the bits in which some key differs from the first */
    for (size_t i = 1; i < n; i++)
        differ |= keys[i] ^ keys[0];
    if (!differ)
        return AG_OK;
    uint64_t *other_keys = malloc(n * sizeof(uint64_t));
    uint32_t *other_items = malloc(n * sizeof(uint32_t));
    if (!other_keys || !other_items) {
        free(other_keys);
        free(other_items);
        return AG_ENOMEM;
    }
    uint64_t *from_keys = keys, *to_keys = other_keys;
    uint32_t *from_items = items, *to_items = other_items;
    for (unsigned shift = 0; shift < 64; shift += 8) {
        if (!((differ >> shift) & 0xff))
            continue;
        size_t start[257] = {0};
        for (size_t i = 0; i < n; i++)
            start[((from_keys[i] >> shift) & 0xff) + 1]++;
        for (int b = 0; b < 256; b++)
            start[b + 1] += start[b];
        for (size_t i = 0; i < n; i++) {
            size_t at = start[(from_keys[i] >> shift) & 0xff]++;
            to_keys[at] = from_keys[i];
            to_items[at] = from_items[i];
        }
        uint64_t *swap_keys = from_keys;
        uint32_t *swap_items = from_items;
        from_keys = to_keys, from_items = to_items;
        to_keys = swap_keys, to_items = swap_items;
    }
    if (from_keys != keys) {
        memcpy(keys, from_keys, n * sizeof(uint64_t));
        memcpy(items, from_items, n * sizeof(uint32_t));
    }
    free(other_keys);
    free(other_items);
    return AG_OK;
}
