"""The examples' progress display: a tqdm bar with loss and accuracy when tqdm is
installed (the [examples] extra), plain lines otherwise."""


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
