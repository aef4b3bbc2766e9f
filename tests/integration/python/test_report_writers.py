"""Report writers: the sample report (build/tests/helpers/report_sample) read back
with the readers people use: pypdf and poppler for the PDF, openpyxl for the
workbook, the csv module for the CSV."""

import csv
import io
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import harness

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(harness.binary_path()))),
                      "tests", "helpers", "report_sample")
CYRILLIC = "Весенняя рассылка"


def pgm(path):
    """(width, height, bytes) of a binary PGM."""
    with open(path, "rb") as f:
        data = f.read()
    m = re.match(rb"P5\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    w, h = int(m.group(1)), int(m.group(2))
    return w, h, data[m.end():]


def dark_pixels(pix, w, box=None):
    x0, y0, x1, y1 = box or (0, 0, w, len(pix) // w)
    return sum(1 for y in range(int(y0), int(y1)) for x in range(int(x0), int(x1))
               if pix[y * w + x] < 128)


@unittest.skipUnless(os.path.exists(SAMPLE), "report_sample not built")
class ReportWritersTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="ana-reports-")
        subprocess.run([SAMPLE, cls.dir, "120"], check=True, capture_output=True)
        cls.empty_dir = tempfile.mkdtemp(prefix="ana-reports-empty-")
        subprocess.run([SAMPLE, cls.empty_dir, "--empty"], check=True, capture_output=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)
        shutil.rmtree(cls.empty_dir, ignore_errors=True)

    def test_pdf_text_metadata_and_pages(self):
        import pypdf
        r = pypdf.PdfReader(os.path.join(self.dir, "sample.pdf"))
        self.assertEqual(len(r.pages), 4)
        text = "\n".join(p.extract_text() for p in r.pages)
        for want in (CYRILLIC, "12,345", "+12.5%", "97.2%", "group-119", "Обзор"):
            self.assertIn(want, text)
        self.assertRegex(r.pages[3].extract_text(), r"4\s*/\s*4")
        self.assertEqual(r.metadata.title, "Campaign performance: " + CYRILLIC)
        self.assertEqual(r.metadata.creator, "analyticsd")
        self.assertTrue(str(r.metadata.get("/CreationDate")).startswith("D:20260302080000"))

    def test_pdf_renders_and_cyrillic_glyphs_are_drawn(self):
        pdf = os.path.join(self.dir, "sample.pdf")
        out = os.path.join(self.dir, "page")
        subprocess.run(["pdftoppm", "-gray", "-r", "72", "-f", "1", "-l", "1", pdf, out],
                       check=True, capture_output=True)
        w, h, pix = pgm(out + "-1.pgm")
        self.assertGreater(dark_pixels(pix, w), 5000)  # not blank
        # where pdftotext puts the Cyrillic word, the render has ink
        bbox = subprocess.run(["pdftotext", "-bbox", "-f", "1", "-l", "1", pdf, "-"],
                              check=True, capture_output=True, text=True).stdout
        m = re.search(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">'
                      r'Весенняя</word>', bbox)
        self.assertIsNotNone(m, bbox[:2000])
        box = [float(v) for v in m.groups()]
        ink = dark_pixels(pix, w, box)
        area = (box[2] - box[0]) * (box[3] - box[1])
        self.assertGreater(ink, area * 0.15)  # glyphs, not empty boxes or blanks

    def test_pdf_without_data_says_so(self):
        import pypdf
        r = pypdf.PdfReader(os.path.join(self.empty_dir, "sample.pdf"))
        self.assertIn("No data for the selected period.", r.pages[0].extract_text())

    def test_xlsx_values_chart_frozen_header_autofilter(self):
        import openpyxl
        wb = openpyxl.load_workbook(os.path.join(self.dir, "sample.xlsx"))
        self.assertEqual(wb.sheetnames, ["Report", "Обзор", "Summary", "Daily messages",
                                         "By group"])
        self.assertEqual(wb["Report"]["A1"].value, "Campaign performance: " + CYRILLIC)
        self.assertEqual(wb.properties.title, "Campaign performance: " + CYRILLIC)
        kpi = wb["Summary"]
        self.assertEqual([c.value for c in kpi[2]], ["Sent", 12345, None, 0.125])
        self.assertEqual(kpi["D2"].number_format, "+0.0%;-0.0%;0.0%")
        chart = wb["Daily messages"]
        self.assertEqual(len(chart._charts), 1)
        self.assertEqual(chart["B2"].value, 400)
        t = wb["By group"]
        self.assertEqual(t.freeze_panes, "A2")
        self.assertEqual(t.auto_filter.ref, "A1:E121")
        self.assertEqual(t["A2"].value, "Группа А")
        self.assertEqual(t["A3"].value, '=HYPERLINK("http://evil")')
        self.assertEqual(t["A3"].data_type, "s")  # a string, never a formula
        self.assertEqual(t["B2"].value, 1000)
        self.assertEqual(t["D2"].number_format, "0.0%")
        self.assertEqual(t["E2"].value.isoformat(), "2026-02-01T00:00:00")
        self.assertIsNone(t["C4"].value)  # a null cell stays empty
        self.assertEqual(t.max_row, 121)

    def test_csv_parses_and_guards_formulas(self):
        with open(os.path.join(self.dir, "sample.csv"), "rb") as f:
            raw = f.read()
        raw.decode("utf-8")
        self.assertNotIn(b"\n", raw.replace(b"\r\n", b""))  # CRLF records only
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
        i = rows.index(["By group"])
        self.assertEqual(rows[i + 1], ["Group", "Sent", "Delivered", "Rate", "Day"])
        self.assertEqual(rows[i + 3][0], "'=HYPERLINK(\"http://evil\")")
        self.assertEqual(rows[i + 4], ["a,b \"q\"", "1002", "", "0.900199600798403", "2026-02-03"])
        self.assertEqual(rows[i + 5][0], "'-2+3")
        self.assertEqual(len(rows) - i - 2, 120)


if __name__ == "__main__":
    unittest.main()
