import smtplib, sys, os, glob, json, email, time
from email.message import EmailMessage
maildir = sys.argv[1]; port = int(sys.argv[2]) if len(sys.argv) > 2 else 2525
def msg(subj):
    m = EmailMessage(); m["From"] = "sender@example.test"; m["To"] = "rcpt@example.test"; m["Subject"] = subj
    m.set_content("hello from smtplib\nsecond line\n"); return m
before = set(glob.glob(maildir + "/*.eml"))
# 1) no auth
with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
    print("EHLO:", s.ehlo()[1].decode().replace("\n", " | "))
    try: print("send no-auth:", s.send_message(msg("no-auth")))
    except smtplib.SMTPSenderRefused as e: print("send no-auth refused:", e.smtp_code, e.smtp_error.decode())
# 2) AUTH PLAIN and AUTH LOGIN
for mech in ("PLAIN", "LOGIN"):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo(); s.user, s.password = "ixp", "ixp-secret"
        code, resp = s.auth(mech, getattr(s, "auth_" + mech.lower()))
        print(f"AUTH {mech}:", code, resp.decode())
        s.send_message(msg("auth-" + mech))
# 3) wrong password
with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
    try: s.login("ixp", "wrong"); print("wrong password accepted ?!")
    except smtplib.SMTPAuthenticationError as e: print("wrong password:", e.smtp_code, e.smtp_error.decode())
new = sorted(set(glob.glob(maildir + "/*.eml")) - before)
print("new .eml files:", len(new))
for f in new:
    m = email.message_from_bytes(open(f, "rb").read()); meta = json.load(open(f[:-4] + ".json"))
    print(os.path.basename(f), "Subject:", m["Subject"], "| body:", m.get_payload().strip().replace("\n", "\\n"), "| meta:", meta)
