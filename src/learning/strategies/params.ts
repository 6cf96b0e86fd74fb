/**
 * Reading a strategy's parameters from untyped input (a study file, an API body) with
 * errors that name the strategy and the parameter, and a refusal of unknown names, so a
 * typo such as "serverLR" is caught instead of silently using a default.
 */
export class Params {
  private used = new Set<string>();
  constructor(readonly strategy: string, private readonly raw: Record<string, unknown>) {
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${strategy}: parameters must be an object`);
  }

  private get(key: string): unknown {
    this.used.add(key);
    return this.raw[key];
  }

  private fail(key: string, want: string, v: unknown): never {
    throw new Error(`${this.strategy}: parameter "${key}" must be ${want}, got ${JSON.stringify(v)}`);
  }

  number(key: string, def: number, check?: { min?: number; max?: number; minExclusive?: number; maxExclusive?: number; integer?: boolean }): number {
    const v = this.get(key);
    if (v === undefined) return def;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, 'a finite number', v);
    const c = check ?? {};
    const parts: string[] = [];
    if (c.integer) parts.push('an integer');
    if (c.min !== undefined) parts.push(`>= ${c.min}`);
    if (c.minExclusive !== undefined) parts.push(`> ${c.minExclusive}`);
    if (c.max !== undefined) parts.push(`<= ${c.max}`);
    if (c.maxExclusive !== undefined) parts.push(`< ${c.maxExclusive}`);
    const ok = (!c.integer || Number.isInteger(v)) && (c.min === undefined || v >= c.min) && (c.max === undefined || v <= c.max)
      && (c.minExclusive === undefined || v > c.minExclusive) && (c.maxExclusive === undefined || v < c.maxExclusive);
    if (!ok) this.fail(key, parts.join(' and '), v);
    return v;
  }

  optionalInt(key: string, min: number): number | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) this.fail(key, `an integer >= ${min}`, v);
    return v;
  }

  choice<T extends string>(key: string, def: T, options: readonly T[]): T {
    const v = this.get(key);
    if (v === undefined) return def;
    if (typeof v !== 'string' || !(options as readonly string[]).includes(v)) this.fail(key, `one of ${options.map((o) => `"${o}"`).join(', ')}`, v);
    return v as T;
  }

  stringList(key: string): string[] | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.length === 0 || !v.every((s) => typeof s === 'string' && s.length > 0)) this.fail(key, 'a non-empty list of site ids', v);
    return [...(v as string[])];
  }

  /** Call after reading every parameter: refuses names the strategy does not know. */
  done(): void {
    const unknown = Object.keys(this.raw).filter((k) => !this.used.has(k));
    if (unknown.length) {
      throw new Error(`${this.strategy}: unknown parameter${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `"${k}"`).join(', ')} (known: ${[...this.used].sort().join(', ')})`);
    }
  }
}
