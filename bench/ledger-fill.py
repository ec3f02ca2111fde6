# Writes DAYS days x ROWS ledger rows (USERS users; 20 apps, 7 models, one currency) straight into a state
# database of this exporter's schema: python3 bench/ledger-fill.py STATE_DB DAYS ROWS USERS [FIRST_DAY].
import datetime, sqlite3, sys
path, days, rows, users = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
db = sqlite3.connect(path)
first = datetime.date.fromisoformat(sys.argv[5]) if len(sys.argv) > 5 else datetime.date(2025, 1, 1)
def day_rows(d):
    day = (first + datetime.timedelta(days=d)).isoformat()
    for i in range(rows):
        user, app, model = i % users, (i // users) % 20, i % 7
        yield (f"dify-{day}-{i:016x}", day, f"app-{app:02}", f"App {app}", None, f"user-{user:05}@example.com",
               f"customer-{user % 50:03}", "openai", f"model-{model}", "USD", 1000 + i, 100 + model, 1100 + i + model,
               3, f"0.{i % 9973:07}", 0, 1, "2026-01-01T00:00:00.000Z")
for d in range(days):
    db.executemany("INSERT INTO ledger VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", day_rows(d))
db.commit()
print(f"ledger: {days} days x {rows} rows", db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0])
