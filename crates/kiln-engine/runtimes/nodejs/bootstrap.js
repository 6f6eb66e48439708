// kiln's Node.js runtime client: loads the function's handler and speaks the Lambda Runtime API
// (2018-06-01), as AWS's own client (aws-lambda-ric) does: CommonJS and ES module handlers,
// async and callback handlers (callbackWaitsForEmptyEventLoop), the context object, error
// payloads {errorType, errorMessage, trace}, and console.* in Lambda's text or JSON format.
// kiln writes this file behind a `#!` line naming the interpreter and shows it at /var/runtime.
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');
const util = require('util');
const { pathToFileURL } = require('url');

const runtimeDir = __dirname;
const nodeMajor = process.versions.node.split('.')[0];

// NODE_PATH as on Lambda (set before any handler code loads).
if (!process.env.NODE_PATH) {
  process.env.NODE_PATH = [
    `/opt/nodejs/node${nodeMajor}/node_modules`,
    '/opt/nodejs/node_modules',
    `${runtimeDir}/node_modules`,
    runtimeDir,
    process.env.LAMBDA_TASK_ROOT || '/var/task',
  ].join(':');
  require('module').Module._initPaths();
}

// ---- Runtime API over one keep-alive connection ----------------------------------------------

class RuntimeApi {
  constructor(address) {
    const i = address.lastIndexOf(':');
    this.host = address.slice(0, i);
    this.port = Number(address.slice(i + 1));
    this.sock = null;
    this.buf = Buffer.alloc(0);
    this.waiter = null;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: this.host, port: this.port }, () => resolve(s));
      s.setNoDelay(true);
      s.on('error', (e) => {
        this.sock = null;
        if (this.waiter) this.waiter.reject(e);
        else reject(e);
      });
      s.on('data', (d) => {
        this.buf = Buffer.concat([this.buf, d]);
        this.pump();
      });
      s.on('close', () => {
        this.sock = null;
        if (this.waiter) this.waiter.reject(new Error('runtime api closed the connection'));
      });
      this.sock = s;
      this.buf = Buffer.alloc(0);
    });
  }

  // Parses one full response out of the buffer when it is there.
  pump() {
    if (!this.waiter) return;
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.buf.slice(0, end).toString('latin1').split('\r\n');
    const status = Number(head[0].split(' ')[1]);
    const headers = {};
    for (const line of head.slice(1)) {
      const c = line.indexOf(':');
      headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
    }
    let body;
    let used;
    if ((headers['transfer-encoding'] || '').toLowerCase() === 'chunked') {
      const parts = [];
      let pos = end + 4;
      for (;;) {
        const le = this.buf.indexOf('\r\n', pos);
        if (le < 0) return;
        const size = parseInt(this.buf.slice(pos, le).toString('latin1'), 16);
        if (size === 0) {
          const fin = this.buf.indexOf('\r\n\r\n', le);
          if (fin < 0) return;
          used = fin + 4;
          break;
        }
        if (this.buf.length < le + 2 + size + 2) return;
        parts.push(this.buf.slice(le + 2, le + 2 + size));
        pos = le + 2 + size + 2;
      }
      body = Buffer.concat(parts);
    } else {
      const len = Number(headers['content-length'] || 0);
      if (this.buf.length < end + 4 + len) return;
      body = this.buf.slice(end + 4, end + 4 + len);
      used = end + 4 + len;
    }
    this.buf = this.buf.slice(used);
    const w = this.waiter;
    this.waiter = null;
    // An idle connection must not keep the event loop alive (callbackWaitsForEmptyEventLoop).
    if (this.sock) this.sock.unref();
    w.resolve({ status, headers, body });
  }

  async request(method, p, body, headers) {
    body = body || Buffer.alloc(0);
    for (let attempt = 0; ; attempt++) {
      try {
        if (!this.sock) await this.connect();
        this.sock.ref();
        let head = `${method} /2018-06-01${p} HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\nContent-Length: ${body.length}\r\n`;
        for (const [k, v] of Object.entries(headers || {})) head += `${k}: ${v}\r\n`;
        const done = new Promise((resolve, reject) => {
          this.waiter = { resolve, reject };
        });
        this.sock.write(Buffer.concat([Buffer.from(head + '\r\n', 'latin1'), body]));
        return await done;
      } catch (e) {
        this.waiter = null;
        if (this.sock) this.sock.destroy();
        this.sock = null;
        if (attempt) throw e;
      }
    }
  }

  async next() {
    const r = await this.request('GET', '/runtime/invocation/next');
    if (r.status !== 200) throw new Error(`runtime api answered ${r.status} to next`);
    return r;
  }

  async post(p, body, headers) {
    const r = await this.request('POST', p, Buffer.from(body), headers);
    if (r.status >= 500) throw new Error(`runtime api answered ${r.status}`);
  }

  respond(id, text) {
    return this.post(`/runtime/invocation/${id}/response`, text, { 'Content-Type': 'application/json' });
  }

  error(id, err) {
    return this.post(`/runtime/invocation/${id}/error`, JSON.stringify(err), {
      'Content-Type': 'application/json',
      'Lambda-Runtime-Function-Error-Type': err.errorType,
    });
  }

  initError(err) {
    return this.post('/runtime/init/error', JSON.stringify(err), {
      'Content-Type': 'application/json',
      'Lambda-Runtime-Function-Error-Type': err.errorType,
    });
  }
}

// ---- errors ----------------------------------------------------------------------------------

function toRapidResponse(error) {
  try {
    if (util.types.isNativeError(error) || error instanceof Error) {
      return {
        errorType: error.name || (error.constructor && error.constructor.name) || 'Error',
        errorMessage: error.message,
        trace: typeof error.stack === 'string' ? error.stack.split('\n') : [],
      };
    }
    return { errorType: typeof error, errorMessage: String(error), trace: [] };
  } catch (_) {
    return { errorType: 'handled', errorMessage: 'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack', trace: [] };
  }
}

class LambdaError extends Error {
  constructor(type, message, cause) {
    super(message);
    this.name = type;
    if (cause && cause.stack) this.stack = `${type}: ${message}\n${cause.stack.split('\n').slice(1).join('\n')}`;
  }
}

// ---- logging ---------------------------------------------------------------------------------

const jsonLogs = (process.env.AWS_LAMBDA_LOG_FORMAT || '').toUpperCase() === 'JSON';
const LEVELS = { TRACE: 1, DEBUG: 2, INFO: 3, WARN: 4, ERROR: 5, FATAL: 6 };
const minLevel = jsonLogs ? LEVELS[(process.env.AWS_LAMBDA_LOG_LEVEL || 'INFO').toUpperCase()] || 3 : 0;
let currentRequestId;

function writeLog(level, args) {
  if (LEVELS[level] < minLevel) return;
  const timestamp = new Date().toISOString();
  let line;
  if (jsonLogs) {
    const entry = { timestamp, level, requestId: currentRequestId };
    const err = args.length === 1 && args[0] instanceof Error ? args[0] : null;
    if (err) {
      entry.message = err.message;
      entry.errorType = err.name;
      entry.errorMessage = err.message;
      entry.stackTrace = typeof err.stack === 'string' ? err.stack.split('\n') : [];
    } else {
      entry.message = util.format(...args);
    }
    try {
      line = JSON.stringify(entry);
    } catch (_) {
      line = JSON.stringify({ timestamp, level, requestId: currentRequestId, message: util.format(...args) });
    }
  } else {
    line = `${timestamp}\t${currentRequestId}\t${level}\t${util.format(...args).replace(/\n/g, '\r')}`;
  }
  process.stdout.write(line + '\n');
}

console.trace = (...a) => writeLog('TRACE', a);
console.debug = (...a) => writeLog('DEBUG', a);
console.info = (...a) => writeLog('INFO', a);
console.log = (...a) => writeLog('INFO', a);
console.warn = (...a) => writeLog('WARN', a);
console.error = (...a) => writeLog('ERROR', a);
console.fatal = (...a) => writeLog('FATAL', a);

function logError(prefix, err) {
  if (jsonLogs) {
    writeLog('ERROR', [Object.assign(new Error(err.errorMessage), { name: err.errorType, stack: err.trace.join('\n') })]);
  } else {
    writeLog('ERROR', [`${prefix} \t${JSON.stringify({ errorType: err.errorType, errorMessage: err.errorMessage, stack: err.trace })}`]);
  }
}

// ---- the handler -----------------------------------------------------------------------------

function taskRoot() {
  const root = process.env.LAMBDA_TASK_ROOT || '/var/task';
  // Without isolation (kiln serve --isolation none) the code is the working directory.
  return fs.existsSync(root) ? root : process.cwd();
}

function isEsmPackage(dir, root) {
  for (let d = dir; d.startsWith(root) || d === root; d = path.dirname(d)) {
    const pj = path.join(d, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        return JSON.parse(fs.readFileSync(pj, 'utf8')).type === 'module';
      } catch (_) {
        return false;
      }
    }
    if (d === path.dirname(d)) break;
  }
  return false;
}

async function loadModule(root, moduleName) {
  const base = path.resolve(root, moduleName);
  for (const ext of ['.js', '.mjs', '.cjs']) {
    const file = base + ext;
    if (!fs.existsSync(file)) continue;
    if (ext === '.mjs' || (ext === '.js' && isEsmPackage(path.dirname(file), root))) {
      return import(pathToFileURL(file).href);
    }
    return require(file);
  }
  // Not a file of the task: a package (node_modules, NODE_PATH), as require would find it.
  return require(require.resolve(moduleName, { paths: [root, ...process.env.NODE_PATH.split(':')] }));
}

async function loadHandler(root, fullHandler) {
  const slash = fullHandler.lastIndexOf('/') + 1;
  const dot = fullHandler.indexOf('.', slash);
  if (dot < 0) throw new LambdaError('Runtime.MalformedHandlerName', 'Bad handler');
  const moduleName = fullHandler.slice(0, dot);
  const handlerPath = fullHandler.slice(dot + 1);
  let mod;
  try {
    mod = await loadModule(root, moduleName);
  } catch (e) {
    if (e instanceof SyntaxError) throw new LambdaError('Runtime.UserCodeSyntaxError', `${e.name}: ${e.message}`, e);
    if (e && (e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_MODULE_NOT_FOUND')) {
      throw new LambdaError('Runtime.ImportModuleError', `Error: ${e.message}`, e);
    }
    throw e;
  }
  let fn = mod;
  for (const part of handlerPath.split('.')) fn = fn == null ? undefined : fn[part];
  if (typeof fn !== 'function') {
    throw new LambdaError('Runtime.HandlerNotFound', `${fullHandler} is undefined or not exported`);
  }
  return fn;
}

function makeContext(headers, done) {
  const deadline = Number(headers['lambda-runtime-deadline-ms'] || 0);
  const ctx = {
    callbackWaitsForEmptyEventLoop: true,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    getRemainingTimeInMillis: () => Math.max(deadline - Date.now(), 0),
    // Legacy context methods, as the official client still has them.
    succeed: (r) => done(null, r),
    fail: (e) => done(e || 'handled'),
    done: (e, r) => done(e, r),
  };
  if (headers['lambda-runtime-client-context']) {
    try { ctx.clientContext = JSON.parse(headers['lambda-runtime-client-context']); } catch (_) { /* as AWS: ignored */ }
  }
  if (headers['lambda-runtime-cognito-identity']) {
    try { ctx.identity = JSON.parse(headers['lambda-runtime-cognito-identity']); } catch (_) { /* ignored */ }
  }
  return ctx;
}

let api;
let inFlight = null; // request id of the invocation being handled
let pendingFinish = null; // callback result waiting for the event loop to empty

async function finish(id, err, result) {
  if (err !== null && err !== undefined) {
    const payload = toRapidResponse(err);
    logError('Invoke Error', payload);
    await api.error(id, payload);
  } else {
    let text;
    try {
      text = JSON.stringify(result === undefined ? null : result);
    } catch (e) {
      const payload = { errorType: 'Runtime.MarshalError', errorMessage: `Unable to stringify response body: ${e.message}`, trace: [] };
      logError('Invoke Error', payload);
      await api.error(id, payload);
      return;
    }
    await api.respond(id, text === undefined ? 'null' : text);
  }
}

async function invoke(handler, r) {
  const id = r.headers['lambda-runtime-aws-request-id'];
  currentRequestId = id;
  inFlight = id;
  if (r.headers['lambda-runtime-trace-id']) process.env._X_AMZN_TRACE_ID = r.headers['lambda-runtime-trace-id'];
  else delete process.env._X_AMZN_TRACE_ID;
  return new Promise((resolve) => {
    let settled = false;
    let ctx;
    const done = (err, result) => {
      if (settled) return;
      settled = true;
      if (ctx.callbackWaitsForEmptyEventLoop) {
        // Answer when nothing is left to run, as Lambda does for callback handlers.
        pendingFinish = () => finish(id, err, result).then(resolve, resolve);
      } else {
        finish(id, err, result).then(resolve, resolve);
      }
    };
    ctx = makeContext(r.headers, done);
    let event;
    try {
      event = JSON.parse(r.body.toString('utf8'));
    } catch (e) {
      settled = true;
      const payload = { errorType: 'Runtime.UnmarshalError', errorMessage: `Unable to unmarshal input: ${e.message}`, trace: [] };
      api.error(id, payload).then(resolve, resolve);
      return;
    }
    let out;
    try {
      out = handler(event, ctx, done);
    } catch (e) {
      settled = true;
      finish(id, e).then(resolve, resolve);
      return;
    }
    if (out && typeof out.then === 'function') {
      out.then(
        (result) => { if (!settled) { settled = true; finish(id, null, result).then(resolve, resolve); } },
        (e) => { if (!settled) { settled = true; finish(id, e === undefined ? new Error('undefined') : e).then(resolve, resolve); } },
      );
    } else if (handler.length < 3 && !settled) {
      // A synchronous handler without a callback: its return value is the result.
      settled = true;
      finish(id, null, out).then(resolve, resolve);
    }
  });
}

process.on('beforeExit', () => {
  if (pendingFinish) {
    const f = pendingFinish;
    pendingFinish = null;
    f();
  }
});

async function fatal(kind, err) {
  const payload = kind === 'Runtime.UnhandledPromiseRejection'
    ? { errorType: kind, errorMessage: `${err && err.name ? `${err.name}: ${err.message}` : String(err)}`, trace: err && err.stack ? err.stack.split('\n') : [] }
    : toRapidResponse(err);
  logError(kind === 'Runtime.UnhandledPromiseRejection' ? 'Unhandled Promise Rejection' : 'Uncaught Exception', payload);
  try {
    if (inFlight) await api.error(inFlight, payload);
    else await api.initError(payload);
  } catch (_) { /* the process ends either way */ }
  process.exit(129);
}

process.on('uncaughtException', (e) => { fatal('Uncaught', e); });
process.on('unhandledRejection', (e) => { fatal('Runtime.UnhandledPromiseRejection', e); });

async function main() {
  api = new RuntimeApi(process.env.AWS_LAMBDA_RUNTIME_API);
  const root = taskRoot();
  process.chdir(root);
  let handler;
  try {
    handler = await loadHandler(root, process.env._HANDLER || '');
  } catch (e) {
    const payload = toRapidResponse(e);
    logError('Uncaught Exception', payload);
    await api.initError(payload);
    process.exit(129);
  }
  for (;;) {
    const r = await api.next();
    await invoke(handler, r);
    inFlight = null;
  }
}

main().catch((e) => fatal('Uncaught', e));
