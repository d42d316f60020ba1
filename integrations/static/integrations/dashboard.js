/* The sync dashboard refreshes itself: every few seconds it asks the server for
 * the cards' numbers (integrations.dashboard.dashboard_numbers, JSON) and writes
 * them into the page in place, without a reload. It stops asking while the tab is
 * hidden and asks at once when the tab is shown again.
 *
 * Plain JavaScript, no framework, no inline script: the page only carries the
 * endpoint and the interval as data attributes of .crm-cards.
 */
"use strict";

(function () {
  const cards = document.querySelector(".crm-cards[data-numbers-url]");
  if (!cards) {
    return;
  }
  const url = cards.dataset.numbersUrl;
  const interval = 1000 * Math.max(1, Number(cards.dataset.refreshSeconds) || 5);
  let timer = null;
  let asking = false;

  function setText(section, selector, text) {
    const element = section.querySelector(selector);
    if (element && element.textContent !== text) {
      element.textContent = text;
    }
  }

  function updateSegments(section, segments) {
    for (const segment of segments) {
      const entry = section.querySelector('.crm-legend [data-status="' + segment.key + '"]');
      if (entry) {
        setText(entry, ".count", segment.text);
        // "Selected, nothing queued" is listed only while it holds rows.
        entry.hidden = segment.key === "selected" && segment.count === 0;
      }
      const part = section.querySelector(".crm-stack .status-" + segment.key);
      if (part) {
        part.style.width = segment.percent.toFixed(3) + "%";
        part.title = part.title.replace(/: [^:]*$/, ": " + segment.text);
      }
    }
  }

  function updateChart(section, card) {
    setText(section, ".synced-count", card.synced_last_24h_text);
    section.querySelectorAll(".crm-chart .scale-label").forEach(function (label, i) {
      if (card.scale[i]) {
        label.textContent = card.scale[i].text;
      }
    });
    section.querySelectorAll(".crm-chart .crm-bars rect").forEach(function (bar, i) {
      const hour = card.hours[i];
      if (!hour) {
        return;
      }
      bar.setAttribute("y", hour.y);
      bar.setAttribute("height", hour.height);
      bar.setAttribute("data-count", hour.count);
      bar.setAttribute("class", hour.count ? "" : "empty");
      const title = bar.querySelector("title");
      if (title) {
        title.textContent = hour.title;
      }
    });
  }

  function updateState(section, state) {
    const cell = section.querySelector(".pause-state");
    if (!cell) {
      return;
    }
    const shown = cell.querySelector(".crm-paused");
    if (state.paused && shown) {
      shown.textContent = state.text;
    } else if (state.paused) {
      const span = document.createElement("span");
      span.className = "crm-paused";
      span.textContent = state.text;
      cell.replaceChildren(span);
    } else {
      cell.replaceChildren(document.createTextNode(state.text));
    }
    // Paused or resumed by someone else meanwhile: offer the other button.
    const pause = section.querySelector('[data-control="pause"]');
    const resume = section.querySelector('[data-control="resume"]');
    if (pause && resume) {
      pause.hidden = state.paused_by_staff;
      resume.hidden = !state.paused_by_staff;
    }
  }

  function updateCard(card) {
    const section = document.getElementById("crm-" + card.crm);
    if (!section) {
      return;
    }
    updateSegments(section, card.segments);
    updateChart(section, card);
    setText(section, ".queue", card.queue.text);
    setText(section, ".oldest-due", card.oldest_due_text);
    setText(section, ".last-success", card.last_success_text);
    setText(section, ".last-run", card.last_run_text);
    updateState(section, card.state);
  }

  function showRefreshedAt(numbers) {
    const time = document.querySelector(".crm-refreshed .refreshed-at");
    if (time) {
      // The server's clock and time zone, as every other time on the page.
      time.setAttribute("datetime", numbers.generated_at);
      time.textContent = numbers.generated_at_text;
    }
  }

  async function refresh() {
    timer = null;
    asking = true;
    try {
      const response = await fetch(url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      // Logged out or refused: the page keeps its last numbers and stops asking.
      if (!response.ok || response.redirected) {
        return;
      }
      const numbers = await response.json();
      numbers.cards.forEach(updateCard);
      showRefreshedAt(numbers);
      cards.dataset.refreshedAt = numbers.generated_at;
    } catch (error) {
      // The server is out of reach for a moment: ask again at the next turn.
    } finally {
      asking = false;
    }
    schedule();
  }

  function schedule() {
    if (timer === null && !asking && !document.hidden) {
      timer = window.setTimeout(refresh, interval);
    }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      window.clearTimeout(timer);
      timer = null;
    } else if (timer === null && !asking) {
      refresh();
    }
  });

  schedule();
})();
