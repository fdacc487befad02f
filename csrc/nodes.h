/* Internal: what sweep.c needs from nodes.c. */
#ifndef AG_NODES_H
#define AG_NODES_H

#include "arena.h"

/* The node's value from its inputs' current values (its own data for leaves). */
double ag_recompute(const ag_node *node);

#endif
