"""The examples' progress display: a tqdm bar with loss and accuracy when tqdm is
installed (the [examples] extra), plain lines otherwise."""

import time


def progress(steps, verbose, desc, every):
    """Returns on_step(k, loss, acc) and close(); without tqdm, prints every `every` steps."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    bar = tqdm(total=steps, desc=desc, unit="step") if tqdm else None
    write = bar.write if bar else print

    def on_step(k, loss, acc):
        if verbose:
            write(f"step {k} loss {loss!r}, accuracy {acc * 100}%")
        if bar:
            bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc * 100:.0f}%", refresh=False)
            bar.update(1)
        elif not verbose and (k % every == every - 1 or k == steps - 1):
            print(f"step {k + 1}/{steps}: loss {loss:.4f}, accuracy {acc * 100:.0f}%")

    return on_step, (bar.close if bar else (lambda: None))


def train_with_progress(train, steps, verbose, desc, every):
    """Runs train(on_step) under the progress display, prints the final loss, accuracy and
    time per step, and returns the final (loss, accuracy)."""
    on_step, close = progress(steps, verbose, desc, every)
    history = []
    start = time.perf_counter()
    try:
        train(lambda k, loss, acc: (history.append((loss, acc)), on_step(k, loss, acc)))
    finally:
        close()
    seconds = time.perf_counter() - start
    loss, acc = history[-1]
    print(
        f"final loss {loss!r}, accuracy {acc * 100:.1f}% "
        f"({steps} steps in {seconds:.3f} s, {seconds / steps * 1e3:.2f} ms/step)"
    )
    return loss, acc
