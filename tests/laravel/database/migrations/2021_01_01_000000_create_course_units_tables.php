<?php

use Illuminate\Database\Migrations\Migration;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Support\Facades\Schema;

// The application's own tables as its migrations made them before ue-resync (integer
// credits and hours as decimals, json, timestamps without time zone), for the cutover.
class CreateCourseUnitsTables extends Migration
{
    public function up()
    {
        Schema::create('course_units', function (Blueprint $table) {
            $table->id();
            $table->string('code', 50);
            $table->string('name');
            $table->decimal('credits', 5, 2)->default(0);
            $table->decimal('hours_cm', 6, 2)->default(0);
            $table->decimal('hours_td', 6, 2)->default(0);
            $table->decimal('hours_tp', 6, 2)->default(0);
            $table->decimal('hours_total', 6, 2)->default(0);
            $table->integer('elements_count')->default(0);
            $table->json('hours_distribution')->nullable();
            $table->boolean('sync_credits_with_elements')->default(true);
            $table->boolean('sync_hours_with_elements')->default(true);
            $table->boolean('auto_sync_enabled')->default(true);
            $table->timestamp('last_element_sync')->nullable();
            $table->timestamp('last_job_sync')->nullable();
            $table->timestamps();
        });
        Schema::create('course_unit_elements', function (Blueprint $table) {
            $table->id();
            $table->foreignId('course_unit_id')->constrained()->cascadeOnDelete();
            $table->string('code', 50);
            $table->string('name');
            $table->decimal('credits', 5, 2)->default(0);
            $table->decimal('hours_cm', 6, 2)->default(0);
            $table->decimal('hours_td', 6, 2)->default(0);
            $table->decimal('hours_tp', 6, 2)->default(0);
            $table->decimal('hours_total', 6, 2)->default(0);
            $table->string('status', 20)->default('active');
            $table->timestamps();
            $table->softDeletes();
        });
    }

    public function down()
    {
        Schema::dropIfExists('course_unit_elements');
        Schema::dropIfExists('course_units');
    }
}
