/**
 * Runs a generation that emits chunks, and decides the HTTP answer at the last possible moment:
 * an error before the first chunk (unknown model, full queue, deadline while queued) still gets its
 * proper status; after that the response is committed as a 200 event stream.
 */
export type Emit = (chunk: Uint8Array) => void;

export type Started = { ok: true; stream: ReadableStream<Uint8Array> } | { ok: false; error: unknown };

export function startStream(
  run: (emit: Emit) => Promise<void>,
  opts: { onCancel: () => void; onError: (e: unknown, emit: Emit) => void; onEnd?: () => void },
): Promise<Started> {
  return new Promise<Started>((resolveStart) => {
    let controller: ReadableStreamDefaultController<Uint8Array> | null = null;
    const pending: Uint8Array[] = [];
    let committed = false;
    let closed = false;

    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        controller = c;
        for (const p of pending.splice(0)) c.enqueue(p);
      },
      cancel() {
        closed = true;
        opts.onCancel();
      },
    });

    const emit: Emit = (chunk) => {
      if (closed) return;
      if (!committed) {
        committed = true;
        resolveStart({ ok: true, stream });
      }
      if (controller) controller.enqueue(chunk);
      else pending.push(chunk);
    };

    run(emit).then(
      () => {
        if (!committed) {
          committed = true;
          resolveStart({ ok: true, stream });
        }
        if (!closed) {
          closed = true;
          controller?.close();
        }
        opts.onEnd?.();
      },
      (e) => {
        if (!committed) {
          committed = true;
          closed = true;
          resolveStart({ ok: false, error: e });
        } else if (!closed) {
          opts.onError(e, emit);
          closed = true;
          controller?.close();
        }
        opts.onEnd?.();
      },
    );
  });
}
