#!/usr/bin/env python3
"""A stand-in for Flink's `bin/flink` CLI submitting to YARN, for tests.

No Hadoop/YARN can be installed here, so the real CLI's `-t yarn-application` cannot deploy.
This stand-in accepts the argv the real CLI of its version accepts (checked against the real
1.20.3 and 2.3.0 CLIs: 2.x has no `run-application`; 1.x deploys an application only through
`run-application`, its `run -t yarn-application` failing with "No ExecutorFactory found"), records its argv and environment (one JSON
line per call in FLINK_HOME/calls.jsonl), registers an ACCEPTED application in the stand-in RM
(tests/support/yarn_rm.rs), runs the job on a REAL Flink session cluster through its REST API (jar
upload, run with the fixed job id `$internal.pipeline.job-id`, restoring from
`execution.state-recovery.path` or `execution.savepoint.path`), then marks the application
RUNNING with the JobManager's address, as an application-mode AM would, and exits 0.

FLINK_HOME/standin.json: {"rm": URL, "flink": URL, "am": HOST:PORT (optional, the address the
application registers as its JobManager's; default: the Flink cluster's)}. FLINK_HOME/mode, when present:
`fail` exits 1 like a refused deployment; `hang` leaves the application ACCEPTED and waits
forever (a full queue).
"""
import glob, json, os, subprocess, sys, time, urllib.request

home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
cfg = json.load(open(os.path.join(home, "standin.json")))


def version():
    for p in glob.glob(os.path.join(home, "lib", "flink-dist*.jar")):
        v = os.path.basename(p)[: -len(".jar")].rsplit("-", 1)[1]
        return tuple(int(x) for x in v.split(".")[:2])
    sys.exit("no lib/flink-dist-*.jar")


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def register(**fields):
    return post(cfg["rm"] + "/standin/apps", fields)


argv = sys.argv[1:]
with open(os.path.join(home, "calls.jsonl"), "a") as f:
    f.write(json.dumps({"argv": argv, "env": dict(os.environ)}) + "\n")

major_minor = version()
if not argv:
    sys.exit("usage: flink <ACTION> [OPTIONS] [ARGUMENTS]")
action = argv[0]
if action == "run-application" and major_minor >= (2, 0):
    print('"run-application" is not a valid action.', file=sys.stderr)
    sys.exit(1)
if action not in ("run", "run-application"):
    print(f'"{action}" is not a valid action.', file=sys.stderr)
    sys.exit(1)
rest, conf, parallelism, entry, jar, args = argv[1:], {}, None, None, None, []
i = 0
target = None
while i < len(rest):
    a = rest[i]
    if jar is not None:
        args.append(a)
    elif a in ("-t", "--target"):
        target = rest[i + 1]; i += 1
    elif a.startswith("-D"):
        k, _, v = a[2:].partition("=")
        conf[k] = v
    elif a in ("-p", "--parallelism"):
        parallelism = int(rest[i + 1]); i += 1
    elif a in ("-c", "--class"):
        entry = rest[i + 1]; i += 1
    elif a.startswith("-"):
        print(f"Unrecognized option: {a}", file=sys.stderr); sys.exit(1)
    else:
        jar = a
    i += 1
if target != "yarn-application":
    print(f"No ClusterClientFactory found for target {target!r}", file=sys.stderr)
    sys.exit(1)
if action == "run" and major_minor < (2, 0):
    # The real 1.x CLI runs `run -t yarn-application` as a client-side program: its
    # execute() finds no executor for an application target (checked on 1.20.3).
    print("org.apache.flink.client.program.ProgramInvocationException: The main method caused "
          "an error: No ExecutorFactory found to execute the application.", file=sys.stderr)
    sys.exit(1)
if jar is None or not os.path.isfile(jar):
    print(f"Could not get job jar and dependencies from JAR file: {jar}", file=sys.stderr)
    sys.exit(1)

mode = ""
mode_file = os.path.join(home, "mode")
if os.path.exists(mode_file):
    mode = open(mode_file).read().strip()
if mode == "fail":
    print("org.apache.flink.client.deployment.ClusterDeploymentException: Couldn't deploy Yarn "
          "Application Cluster\nCaused by: org.apache.hadoop.yarn.exceptions.YarnException: "
          "Failed to submit application to YARN : queue root.full does not exist", file=sys.stderr)
    sys.exit(1)

app = register(name=conf.get("yarn.application.name", "Flink Application Cluster"),
               tags=conf.get("yarn.tags", ""), queue=conf.get("yarn.application.queue", ""))["id"]
print(f"Submitted application {app}", flush=True)
if mode == "hang":
    print("Deployment took more than 60 seconds. Please check if the requested resources are "
          "available in the YARN cluster", flush=True)
    while True:
        time.sleep(3600)

flink = cfg["flink"]
up = subprocess.run(["curl", "-sS", "-m", "60", "-H", "Expect:", "-F", f"jarfile=@{jar}",
                     flink + "/jars/upload"], capture_output=True, text=True)
try:
    jar_id = json.loads(up.stdout)["filename"].rsplit("/", 1)[-1]
except Exception:
    register(id=app, state="FAILED", final_status="FAILED", diagnostics="jar upload failed")
    print(f"jar upload failed: {up.stdout} {up.stderr}", file=sys.stderr)
    sys.exit(1)
body = {"jobId": conf.get("$internal.pipeline.job-id"), "programArgsList": args,
        "flinkConfiguration": {k: v for k, v in conf.items()
                               if not k.startswith(("yarn.", "$internal.", "security."))}}
if entry:
    body["entryClass"] = entry
if parallelism:
    body["parallelism"] = parallelism
restore = conf.get("execution.state-recovery.path") or conf.get("execution.savepoint.path")
if restore:
    body["savepointPath"] = restore
req = urllib.request.Request(f"{flink}/jars/{jar_id}/run", data=json.dumps(body).encode(),
                             method="POST", headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=60) as r:
        jid = json.loads(r.read())["jobid"]
except urllib.error.HTTPError as e:
    text = e.read().decode(errors="replace")
    register(id=app, state="FINISHED", final_status="FAILED", diagnostics=text[:2000])
    print(f"The program caused an error: {text}", file=sys.stderr)
    sys.exit(1)
# FLINK_HOME/standin.json may name another address for the AM (a proxy or gateway in front).
am = cfg.get("am") or flink.split("://", 1)[1]
register(id=app, state="RUNNING", am_rpc=am, flink=flink, jid=jid)
print(f"Found Web Interface {am} of application '{app}'.", flush=True)
