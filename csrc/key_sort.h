/* Sorting indices by 64-bit keys, stably, in linear time (key_sort.c). Internal to the C
 * core: the tape's compiler (tape_make.c) orders its slots and instructions with it. */
#ifndef AG_KEY_SORT_H
#define AG_KEY_SORT_H

#include <stddef.h>
#include <stdint.h>

/* Sorts items[0..n) by keys[0..n), ascending, keeping the order of equal keys; each key
 * moves with its item. Sorting by several fields is sorting by each in turn, the least
 * significant first. AG_OK or AG_ENOMEM (then nothing moved). */
int ag_sort_by_keys(uint64_t *keys, uint32_t *items, size_t n);

#endif
