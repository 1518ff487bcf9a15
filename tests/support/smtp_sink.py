"""A real SMTP server for tests: aiosmtpd on 127.0.0.1:PORT, writing each accepted message to
DIR/<n>.eml (written whole, then renamed). Prints "ready" once it accepts connections and runs
until killed. Usage: python smtp_sink.py PORT DIR"""

import os
import sys
import threading
import time

from aiosmtpd.controller import Controller

port = int(sys.argv[1])
folder = sys.argv[2]
os.makedirs(folder, exist_ok=True)
count = 0
lock = threading.Lock()


class Sink:
    async def handle_DATA(self, server, session, envelope):
        global count
        with lock:
            count += 1
            n = count
        tmp = os.path.join(folder, f".{n}.tmp")
        with open(tmp, "wb") as f:
            f.write(f"X-Received-At: {time.time():.6f}\r\n".encode())
            f.write(f"X-Envelope-From: {envelope.mail_from}\r\n".encode())
            f.write(f"X-Envelope-To: {','.join(envelope.rcpt_tos)}\r\n".encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(folder, f"{n}.eml"))
        return "250 2.0.0 Ok: queued as sink-%d" % n


controller = Controller(Sink(), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
try:
    threading.Event().wait()
finally:
    controller.stop()
