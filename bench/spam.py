"""SpamAssassin scores of every example campaign's mail, as sent, beside a spammy reference.

Run: .venv/bin/python bench/spam.py [--all-rules] [--out DIR]

Each campaign in campaigns/ (but segments.toml) is test-sent with `valuemail send CAMPAIGN
--test-to`, one message per segment variant (rendered in English and again in Dutch), over SMTP
to an aiosmtpd server on loopback; the contest's invitation, share-link confirmation and
winners' notice go out through their own paths (tests/support/deliverability.py). What the
server received is scored by SpamAssassin from the Debian package: `spamassassin --local` (no
network tests), Bayes and the auto-welcomelist off, a private home and site configuration, the
package's rules. The reference, scored in the same run by the same scorer, is a crude spam (and
GTUBE). Target: every example mail below 2.0 (5.0 is SpamAssassin's spam threshold).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.db import make_engine  # noqa: E402
from engine.migrate import upgrade  # noqa: E402
from tests.support.deliverability import TARGET, SpamAssassin, gtube, sent_mails, spammy_control  # noqa: E402

#: The instant the test sends act as of: the example campaigns are dated (as in the test suite).
AS_OF = "2027-03-20T09:00:00+01:00"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all-rules", action="store_true", help="also list rules that fired with (near) zero points")
    parser.add_argument("--out", type=Path, help="keep each scored message as DIR/<campaign>-<variant>-<lang>.eml")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="valuemail-spam-") as tmp:
        work = Path(tmp)
        project = work / "project"
        project.mkdir()
        for folder in ("campaigns", "templates"):
            shutil.copytree(ROOT / folder, project / folder)
        url = f"sqlite:///{work / 'valuemail.db'}"
        engine = make_engine(url)
        upgrade(engine)
        started = time.monotonic()
        mails = sent_mails(project, url, engine, as_of=AS_OF)
        built = time.monotonic() - started
        engine.dispose()
        scorer = SpamAssassin(work / "spamassassin")
        started = time.monotonic()
        # The references go through the same run as the example mails.
        *scores, crude, reference = scorer.score_many([m.data for m in mails] + [spammy_control(), gtube()])
        rows = sorted(((m.campaign, m.variant, m.language, s) for m, s in zip(mails, scores)), key=lambda r: r[:3])
        references = [("reference: crude spam", "-", "-", crude), ("reference: GTUBE", "-", "-", reference)]
        scoring = time.monotonic() - started
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            for mail in mails:
                name = f"{mail.campaign}-{mail.variant.replace(':', '-')}-{mail.language}.eml"
                (args.out / name).write_bytes(mail.data)

    width = max(len(c) for c, _, _, _ in rows + references)
    vwidth = max(len(v) for _, v, _, _ in rows + references)
    print(f"{'campaign':<{width}}  {'variant':<{vwidth}}  lang  {'score':>6}  verdict  rules hit (points)")
    for campaign, variant, language, score in rows + references:
        verdict = "ok" if score.score < TARGET else "HIGH" if score.score < 5.0 else "SPAM"
        print(f"{campaign:<{width}}  {variant:<{vwidth}}  {language:<4}  {score.score + 0.0:>6.1f}  {verdict:<7}  "
              f"{score.fired(all_rules=args.all_rules)}")
    worst = max(score.score for _, _, _, score in rows)
    over = sum(score.score >= TARGET for _, _, _, score in rows)
    print(f"\n{len(rows)} example mails: highest {worst + 0.0:.1f}, {over} at or over the target (< {TARGET}); "
          f"the crude spam reference scored {references[0][3].score:.1f} (SpamAssassin's spam threshold: 5.0)")
    print(f"built and sent in {built:.1f} s, scored in {scoring:.1f} s "
          f"({len(rows) + len(references)} messages in one spamassassin run)")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
