/**
 * The SentencePiece (unigram) tokenizer of Universal Sentence Encoder lite: the most probable split
 * of the text into vocabulary pieces (Viterbi over piece log-probabilities).
 *
 * Port of the tokenizer in @tensorflow-models/universal-sentence-encoder, as shipped inside
 * @energetic-ai/embeddings (Copyright 2019 Google LLC, Apache-2.0). It is rewritten rather than
 * imported because that package does not export it, and importing the package pulls in
 * @energetic-ai/core, a second, bundled copy of TF.js beside the one this engine runs.
 */

/** Word boundary marker: SentencePiece encodes spaces as this character. */
const SEPARATOR = "\u2581";
/** `<unk>`, `<s>`, `</s>` and three spare ids open the vocabulary; they never match text. */
const RESERVED = 6;
const UNKNOWN = 0;

interface TrieNode {
  children: Map<string, TrieNode>;
  /** Set where a vocabulary piece ends. */
  piece?: { id: number; score: number };
}

export type Vocabulary = readonly (readonly [piece: string, score: number])[];

export class SentencePieceTokenizer {
  private readonly root: TrieNode = { children: new Map() };
  /** Piece lengths in code points, by id (the Viterbi walk steps back by them). */
  private readonly lengths: number[];

  constructor(vocabulary: Vocabulary) {
    this.lengths = vocabulary.map(([piece]) => [...piece].length);
    for (let id = RESERVED; id < vocabulary.length; id++) {
      const [piece, score] = vocabulary[id]!;
      let node = this.root;
      for (const ch of piece) {
        let next = node.children.get(ch);
        if (!next) node.children.set(ch, (next = { children: new Map() }));
        node = next;
      }
      node.piece = { id, score };
    }
  }

  encode(text: string): number[] {
    const normalized = text.normalize("NFKC");
    if (normalized.length === 0) return [];
    const symbols = [...(SEPARATOR + normalized.replaceAll(" ", SEPARATOR))];
    const n = symbols.length;
    // best[i]: score of the best split of symbols[0, i); last[i]: the id of its last piece.
    const best = new Array<number>(n + 1).fill(-Infinity);
    const last = new Array<number>(n + 1).fill(UNKNOWN);
    best[0] = 0;
    for (let start = 0; start < n; start++) {
      const base = best[start]!;
      if (base === -Infinity) continue; // no split ends here
      let node: TrieNode | undefined = this.root;
      let matched = false;
      for (let end = start; end < n && node; end++) {
        node = node.children.get(symbols[end]!);
        if (node?.piece) {
          matched = true;
          // `>=`: on a tie the piece starting later wins, as in the reference implementation.
          const score = base + node.piece.score;
          if (score >= best[end + 1]!) {
            best[end + 1] = score;
            last[end + 1] = node.piece.id;
          }
        }
      }
      // A character no piece covers becomes `<unk>` (score 0, one symbol long).
      if (!matched && base >= best[start + 1]!) {
        best[start + 1] = base;
        last[start + 1] = UNKNOWN;
      }
    }
    const ids: number[] = [];
    for (let i = n; i > 0; ) {
      const id = last[i]!;
      ids.push(id);
      i -= id === UNKNOWN ? 1 : this.lengths[id]!;
    }
    ids.reverse();
    // Runs of unknown characters collapse into one `<unk>`.
    return ids.filter((id, i) => !(id === UNKNOWN && ids[i - 1] === UNKNOWN));
  }
}
