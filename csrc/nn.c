/* What pyautograd.nn needs in C: a whole Layer applied to one input in one call.
 *
 * It makes exactly the nodes Neuron.__call__ makes one neuron at a time (a dot node,
 * bias first, then a relu node when the neuron is nonlinear), so the graph, its values
 * and its gradients are the same; only the trips between Python and C are fewer.
 * Its dot nodes hold their inputs through rows (arena.h): each neuron's weight row, and
 * one input row per call, shared by the layer's neurons.
 * Not here: the parameters themselves (they are ordinary leaves) or any state.
 */
#include "arena.h"
#include "core.h"
#include "nodes.h"

int ag_layer(ag_row *const *rows, const uint8_t *nonlin, size_t nout, size_t nin, const ag_id *xs,
             ag_id *out)
{
    ag_row *inputs = ag_row_new(xs, nin, 0);
    if (!inputs) {
        ag_fail(AG_ENOMEM, 0);
        return AG_ENOMEM;
    }
    int status = AG_OK;
    for (size_t j = 0; j < nout; j++) {
        ag_id act = ag_dot_over_rows(rows[j], inputs);
        if (act && nonlin[j]) {
            ag_id activated = ag_apply(AG_RELU, act, 0);
            ag_release(act); /* the relu node holds it now */
            act = activated;
        }
        if (!act) {
            status = ag_last_error() ? ag_last_error() : AG_ENOMEM;
            for (size_t k = 0; k < j; k++)
                ag_release(out[k]);
            break;
        }
        out[j] = act;
    }
    /* The dot nodes hold the row now, if any were made. Releasing the call's reference
     * runs no Python code: the caller still holds each x (a NodeList, or the ids
     * apply_layers owns), so none drops to the one reference that unpins its Value. */
    ag_row_release(inputs);
    return status;
}
