import type { Hono } from "hono";
import { z } from "zod";
import { BordeError } from "../../errors.js";
import type { GenerationResult } from "../../engines/contract.js";
import { readInputBody } from "../body.js";
import { article, decodeTaskInput, isInferTask, MEDIA_FIELDS, TASK_INFO } from "../../tasks/index.js";
import { callContext, type ApiDeps, type Env } from "../context.js";
import { SSE_DONE, sseData } from "../sse.js";
import { respondWithStream, streamHooks } from "../stream.js";
import { meteredJson, meteredStream } from "../metered.js";
import { EmbeddingsInput, schemaOf, embeddingsResult, finalStreamEvent, textGenerationInput, textGenerationResult, toGenerationRequest } from "./convert.js";
import { parseModelId } from "../../catalog/ids.js";
import { isRepoSource } from "../../catalog/index.js";

const SearchQuery = z.object({
  search: z.string().max(256).optional(),
  task: z.string().max(64).optional(),
  source: z.enum(["catalog", "local", "bundled"]).optional(),
  installed: z.enum(["true", "false"]).optional(),
  page: z.coerce.number().int().min(1).max(100_000).default(1),
  per_page: z.coerce.number().int().min(1).max(1000).default(100),
});

/** Workers AI REST: /client/v4/accounts/{account_id}/ai/... */
export function registerWorkersAi(app: Hono<Env>, deps: ApiDeps): void {
  const base = "/client/v4/accounts/:account/ai";
  const textInput = textGenerationInput(deps.config.maxTokensLimit);

  app.post(`${base}/run/:model{.+}`, async (c) => {
    const modelId = c.req.param("model");
    parseModelId(modelId);
    c.set("model", modelId);
    const input = await readInputBody(c.req.raw, deps.config.maxBodyBytes, (n) => c.set("bytesIn", n));
    if ("json" in input && (typeof input.json !== "object" || input.json === null || Array.isArray(input.json)))
      throw new BordeError("InvalidInput", "Invalid input: the body must be a JSON object");

    // One deadline for the whole call, an auto-pull wait included. `done` runs on every way out:
    // here for plain answers and refusals, from the stream's end for streams.
    const call = callContext(c, deps.config);
    let streaming = false;
    try {
      const info = await deps.inference.resolve(modelId, call.ctx.signal);
      if (isInferTask(info.task)) {
        const task = info.task;
        // A raw file body is the task's media field (`curl --data-binary @photo.jpg`).
        const media = MEDIA_FIELDS[task];
        if ("binary" in input && !media) throw new BordeError("InvalidInput", `Invalid input: ${article(task)} ${task} model takes a JSON object, not a file`);
        const wire = "binary" in input ? { [media!.field]: input.binary } : input.json;
        const limits = { maxPixels: deps.config.maxImagePixels, maxAudioSeconds: deps.config.maxAudioSeconds };
        const result = await deps.inference.infer(call.ctx, info, () => decodeTaskInput(task, wire, limits));
        return meteredJson(c, deps, call, { result, success: true, errors: [], messages: [] });
      }
      if ("binary" in input) throw new BordeError("InvalidInput", `Invalid input: ${article(info.task)} ${info.task} model takes a JSON object, not a file`);
      const body = input.json as Record<string, unknown>;
      const asksForText = "prompt" in body || "messages" in body;
      // Any GGUF llama can also embed: `{text}` without a prompt asks for that. A prompt sent to an
      // embedding model goes the text way, where the inference service refuses it with 5007.
      if (!asksForText && (info.task === "text-embeddings" || "text" in body)) {
        const e = EmbeddingsInput.parse(body);
        const r = await deps.inference.embed(call.ctx, info, typeof e.text === "string" ? [e.text] : e.text);
        return meteredJson(c, deps, call, { result: embeddingsResult(r), success: true, errors: [], messages: [] });
      }
      const t = textInput.parse(body);
      const request = toGenerationRequest(t);
      if (!t.stream) {
        const r = await deps.inference.generate(call.ctx, info, request);
        return meteredJson(c, deps, call, { result: textGenerationResult(r), success: true, errors: [], messages: [] });
      }
      streaming = true;
      return await respondWithStream(
        c,
        c.get("requestId"),
        async (raw, last) => {
          const out = meteredStream(c, deps, call, raw, last);
          const r: GenerationResult = await deps.inference.generate(call.ctx, info, request, (text) => out.emit(sseData({ response: text })));
          out.finish([sseData(finalStreamEvent(r)), SSE_DONE]);
        },
        streamHooks(c, call, "workers-ai"),
      );
    } finally {
      if (!streaming) call.done();
    }
  });

  app.get(`${base}/models/search`, async (c) => {
    const q = SearchQuery.parse(c.req.query());
    let models = await deps.store.list();
    if (q.search) models = models.filter((m) => m.id.toLowerCase().includes(q.search!.toLowerCase()) || m.description.toLowerCase().includes(q.search!.toLowerCase()));
    if (q.task) models = models.filter((m) => m.task === q.task || TASK_INFO[m.task].name.toLowerCase() === q.task!.toLowerCase());
    if (q.source) models = models.filter((m) => m.source === q.source);
    if (q.installed) models = models.filter((m) => String(m.installed) === q.installed);
    const total = models.length;
    const page = models.slice((q.page - 1) * q.per_page, q.page * q.per_page);
    const loaded = new Set(deps.scheduler.snapshot().models.filter((m) => m.state === "ready").map((m) => m.id));
    return c.json({
      result: page.map((m) => ({
        id: m.id,
        name: m.id,
        description: m.description,
        task: TASK_INFO[m.task],
        engine: m.engine,
        schema: schemaOf(m.task),
        source: m.source,
        size: m.sizeBytes,
        installed: m.installed,
        loaded: loaded.has(m.id),
        license: m.license,
        hub: m.hub
          ? isRepoSource(m.hub)
            ? { repo: m.hub.repo, revision: m.hub.revision, files: m.hub.files.map((f) => f.file) }
            : { repo: m.hub.repo, file: m.hub.file, revision: m.hub.revision, sha256: m.hub.sha256 }
          : null,
        properties: [
          { property_id: "task", value: m.task },
          { property_id: "installed", value: String(m.installed) },
        ],
      })),
      success: true,
      errors: [],
      messages: [],
      result_info: { page: q.page, per_page: q.per_page, count: page.length, total_count: total },
    });
  });
}
