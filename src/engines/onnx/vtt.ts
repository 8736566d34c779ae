/** One subtitle line: seconds from the start of the audio, and its text. */
export interface Cue {
  start: number;
  end: number;
  text: string;
}

/** `hh:mm:ss.mmm`, WebVTT's timestamp. */
function timestamp(seconds: number): string {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const pad = (n: number, width = 2) => String(n).padStart(width, "0");
  return `${pad(Math.floor(ms / 3_600_000))}:${pad(Math.floor(ms / 60_000) % 60)}:${pad(Math.floor(ms / 1000) % 60)}.${pad(ms % 1000, 3)}`;
}

/** A WebVTT document, as Workers AI's whisper returns in `vtt`. */
export function buildVtt(cues: Cue[]): string {
  // A cue's text may not hold a blank line (it would end the cue) nor the arrow.
  const body = cues.map((c) => `${timestamp(c.start)} --> ${timestamp(Math.max(c.end, c.start))}\n${c.text.replace(/\n+/g, " ").replace(/-->/g, "->")}\n`);
  return ["WEBVTT\n", ...body].join("\n");
}
