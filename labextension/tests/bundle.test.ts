import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("..", import.meta.url));
const pkg = JSON.parse(readFileSync(`${root}/package.json`, "utf8"));
const staticDir = `${root}/../jupyter_stream/static`;

async function bundle(entry: string, options: Record<string, unknown>): Promise<string> {
  const out = await build({ entryPoints: [`${root}/${entry}`], bundle: true, write: false, minify: true, logLevel: "silent", ...options });
  return out.outputFiles[0].text;
}

describe("the committed bundle", () => {
  it("the build scripts use the options checked here", () => {
    expect(pkg.scripts["build:js"]).toContain("--format=esm --target=es2020 --minify --legal-comments=none");
    expect(pkg.scripts["build:css"]).toContain("--target=chrome100 --minify");
  });

  it("widget.js is up to date with src/ (run `npm run build`)", async () => {
    const js = await bundle("src/widget.ts", { format: "esm", target: "es2020", legalComments: "none" });
    expect(readFileSync(`${staticDir}/widget.js`, "utf8")).toBe(js);
  });

  it("widget.css is up to date with src/ (run `npm run build`)", async () => {
    const css = await bundle("src/widget.css", { target: "chrome100" });
    expect(readFileSync(`${staticDir}/widget.css`, "utf8")).toBe(css);
  });

  it("has an anywidget default export and no innerHTML", () => {
    const js = readFileSync(`${staticDir}/widget.js`, "utf8");
    expect(js).toMatch(/export\s*\{[^}]*as default[^}]*\}/);
    expect(js).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
  });
});
