/**
 * Clients name languages as Workers AI lets them ("en", "fr", "english", "French", "en-US"); each
 * model family wants its own code (m2m100 `fr`, NLLB `fra_Latn`, mBART-50 `fr_XX`, whisper `fr`).
 * Instead of a table per family, a name is matched through the English display names ICU already
 * knows, and a code through its canonical BCP 47 form, which maps ISO 639-2/3 to 639-1 ("fra",
 * "fre" → "fr"): one rule serves every family's code list.
 */

const displayNames = new Intl.DisplayNames(["en"], { type: "language", fallback: "none" });

interface LanguageTag {
  language: string;
  script?: string;
}

/** `fra_Latn`, `fr-FR`, `fre` → its canonical language (and script); undefined when not a tag. */
function parseTag(code: string): LanguageTag | undefined {
  try {
    const [canonical] = Intl.getCanonicalLocales(code.replace(/_/g, "-"));
    if (canonical === undefined) return undefined;
    const locale = new Intl.Locale(canonical);
    return { language: locale.language, script: locale.script };
  } catch {
    return undefined;
  }
}

function nameOf(code: string): string | undefined {
  const tag = parseTag(code);
  return tag ? displayNames.of(tag.language)?.toLowerCase() : undefined;
}

/**
 * The model's code for `requested`, among `codes` (the codes its tokenizer or generation config
 * lists), or undefined when the model does not know that language.
 */
export function resolveLanguage(requested: string, codes: readonly string[]): string | undefined {
  const wanted = requested.trim();
  if (wanted === "") return undefined;
  const exact = codes.find((c) => c.toLowerCase() === wanted.toLowerCase());
  if (exact !== undefined) return exact;

  // A language name: "english", "French".
  const lowered = wanted.toLowerCase();
  const byName = codes.find((c) => nameOf(c) === lowered);
  if (byName !== undefined) return byName;

  // A code in another form: "fra" for "fr", "fr-FR" for "fr", "fr" for "fra_Latn".
  const tag = parseTag(wanted);
  if (!tag) return undefined;
  const sameLanguage = codes.filter((c) => parseTag(c)?.language === tag.language);
  // Where the model has several scripts of one language (NLLB's zho_Hans/zho_Hant), the one asked for.
  return sameLanguage.find((c) => tag.script !== undefined && parseTag(c)?.script === tag.script) ?? sameLanguage[0];
}
